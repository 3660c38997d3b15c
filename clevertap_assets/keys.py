"""Names shared across the package: resource keys, the CleverTap pool, run tags and
Dagster's standard metadata keys.

They live apart from the modules that use them so that nothing imports an asset module, or
a destination, only for a constant; every `dagster/` key the package writes or reads is here.
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
"""Prefix of the export steps' concurrency pools (CleverTap allows 3 exports per account)."""


CLEVERTAP_EXPORTS_PER_ACCOUNT = 3
"""CleverTap answers 429 beyond 3 concurrent export requests per account: the pools' default
limit in `dagster.yaml`."""


def clevertap_pool(account_id: str | None) -> str:
    """The pool of one CleverTap account's export steps, `clevertap_api/<account id>`.

    CleverTap's limit of 3 concurrent exports is per account, so pipelines of different
    accounts on one instance get a pool (and the instance's default limit of 3) each, while
    two pipelines of one account share theirs. The account id is not a secret; the passcode
    never goes near a pool name. Without an account id nothing can export, and the steps
    fall back to the bare prefix.
    """
    return f"{CLEVERTAP_POOL}/{account_id}" if account_id else CLEVERTAP_POOL


PRIORITY_TAG = "dagster/priority"
"""Dagster's run priority tag: the run queue and pool claims serve higher numbers first."""

BACKFILL_TAG = "dagster/backfill"
"""Dagster's tag on every run a backfill launches."""

PARTITION_NAME_TAG = "dagster/partition"
ASSET_PARTITION_RANGE_START_TAG = "dagster/asset_partition_range_start"
ASSET_PARTITION_RANGE_END_TAG = "dagster/asset_partition_range_end"
"""Dagster's documented run tags for one partition and for a single-run partition range
(https://docs.dagster.io/api/dagster/partitions: "dagster/asset_partition_range_start")."""

EVENT_TAG = "clevertap/event"
"""Run tag naming the event (its asset's last key part) a scheduled or sensor run loads."""

DAYS_TAG = "clevertap/days"
"""Run tag naming the days a run loads, `FIRST...LAST` or one day, shown in the runs list."""

COLUMN_SCHEMA = "dagster/column_schema"
ROW_COUNT = "dagster/row_count"
PARTITION_ROW_COUNT = "dagster/partition_row_count"
"""Dagster's standard table metadata keys (`TableMetadataSet`, not exported by `dagster` in
1.13), which the catalog shows as the table's columns and charts as its rows: `ROW_COUNT` is
the whole table as a load leaves it, `PARTITION_ROW_COUNT` the materialized day's
(https://docs.dagster.io/guides/build/assets/metadata-and-tags/table-metadata). Dagster's
database IO managers add `dagster/table_name` themselves."""
