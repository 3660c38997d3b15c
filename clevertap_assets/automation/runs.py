"""What the schedule and the sensors share about runs: which are still going, and how a range
of days becomes one run.

"Still going" is asked of the instance alone: a started run of these assets that stopped
beating its heartbeat is failed first (`liveness.fail_silent_runs`), wherever it ran, so a run
killed with its worker never holds its events back.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import date

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunRequest, RunsFilter

from clevertap_assets.assets.pipeline_events import EventAsset
from clevertap_assets.keys import BACKFILL_TAG
from clevertap_assets.liveness import fail_silent_runs
from clevertap_assets.run_tags import load_tags

# Every status in which a run still holds, or will take, a worker: the ones a new run for the
# same asset would pile up behind.
IN_PROGRESS_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


def in_progress_runs(
    instance: DagsterInstance, assets: Collection[AssetKey]
) -> Sequence[DagsterRun]:
    """Unfinished runs of `assets`, after failing those that went silent."""
    fail_silent_runs(instance, assets)
    return unfinished_runs(instance, assets)


def unfinished_runs(
    instance: DagsterInstance, assets: Collection[AssetKey]
) -> Sequence[DagsterRun]:
    """Unfinished runs of `assets`, as the instance records them: asked without side
    effects, a silent run included."""
    keys = set(assets)
    return [
        run
        for run in instance.get_runs(RunsFilter(statuses=IN_PROGRESS_STATUSES))
        if keys & set(run.asset_selection or ())
    ]


def assets_in_progress(instance: DagsterInstance, assets: Collection[AssetKey]) -> set[AssetKey]:
    """Those of `assets` some unfinished run will write, a backfill's runs aside: a backfill
    queued for hours must not hold a tick back."""
    return {
        key
        for run in in_progress_runs(instance, assets)
        if BACKFILL_TAG not in run.tags
        for key in run.asset_selection or ()
        if key in assets
    }


def range_run_request(
    events: Sequence[EventAsset],
    first_day: date,
    last_day: date,
    run_key: str,
    tags: Mapping[str, str] | None = None,
) -> RunRequest:
    """One run of events over consecutive days, read as a single window by the account's
    reader, with the events' checks: a scheduled duplicate or count mismatch shows on the
    asset like a manual one.

    A schedule's run key only dedupes within its tick (a tick retried after a daemon crash
    launches nothing twice); a sensor's dedupes forever. The event and days tags tell the
    runs apart in the runs list, where every scheduled run otherwise shows the same job.
    """
    keys = [event.key for event in events]
    return RunRequest(
        run_key=run_key,
        asset_selection=keys,
        asset_check_keys=[check for event in events for check in event.check_keys],
        tags={**(tags or {}), **load_tags(keys, first_day, last_day)},
    )
