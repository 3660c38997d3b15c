"""What the schedule and the sensors share about runs: which are still going, and how a range
of days becomes one run."""

from collections.abc import Mapping, Sequence
from datetime import date

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, RunsFilter

from clevertap_assets.keys import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

# Every status in which a run still holds, or will take, a worker: the ones a new run for the
# same asset would pile up behind.
IN_PROGRESS_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def in_progress_runs(instance: DagsterInstance) -> Sequence[DagsterRun]:
    return instance.get_runs(RunsFilter(statuses=IN_PROGRESS_STATUSES))


def assets_in_progress(instance: DagsterInstance) -> set[AssetKey]:
    """Assets some unfinished run will write, whoever launched it (tick, sensor, UI backfill)."""
    return {key for run in in_progress_runs(instance) for key in run.asset_selection or ()}


def range_run_request(
    key: AssetKey,
    first_day: date,
    last_day: date,
    run_key: str,
    tags: Mapping[str, str] | None = None,
) -> RunRequest:
    """One run of one event over consecutive days, read as a single window.

    A schedule's run key only dedupes within its tick (a tick retried after a daemon crash
    launches nothing twice); a sensor's dedupes forever.
    """
    return RunRequest(
        run_key=run_key,
        asset_selection=[key],
        tags={
            **(tags or {}),
            ASSET_PARTITION_RANGE_START_TAG: first_day.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last_day.isoformat(),
        },
    )
