"""Names shared across the package: resource keys, the CleverTap pool and run tags.

They live apart from the modules that use them so that nothing imports an asset module, or
a destination, only for a constant.
"""

CLEVERTAP = "clevertap"
"""Resource key of `CleverTapResource`."""

WAREHOUSE_IO_MANAGER = "warehouse_io_manager"
"""Resource key of the chosen destination's IO manager."""

WAREHOUSE_STATS = "warehouse_stats"
"""Resource key of the chosen destination's `EventTableStats` (checks, reconciliation)."""

WEBHOOK_INBOX = "webhook_inbox"
"""Resource key of the webhook inbox the receiver fills."""

CLEVERTAP_POOL = "clevertap_api"
"""The concurrency pool of every export step (CleverTap allows 3 exports per account)."""

PARTITION_NAME_TAG = "dagster/partition"
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
"""Dagster's documented run tags for one partition and for a single-run partition range
(https://docs.dagster.io/api/dagster/partitions: "dagster/asset_partition_range_start")."""
