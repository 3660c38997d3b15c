"""What the schedule and the sensors share about runs: which are still going, and how a range
of days becomes one run.

A run whose worker was killed (`kill -9` of its process group, the OOM killer, a lost node)
never reports an end: with the default run launcher Dagster's run monitoring cannot see the
worker, so the run would stay STARTED forever and every "is a run for this still going?"
would wait on it. Before answering that question, runs whose worker is gone are therefore
marked failed, and the concurrency slots they held are freed, so their work is requested again
at once. The worker is identified by the pid Dagster records in the run's first engine event
("Started process for run", or the executor's "parent process"); with the default run launcher
runs execute on the code server's host, which is where schedules and sensors are evaluated. A
run without such an event yet (still starting, or on another kind of launcher) is left alone.
"""

from collections.abc import Mapping, Sequence
from datetime import date

from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
)

from clevertap_assets.assets.checks import event_check_keys
from clevertap_assets.keys import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    EVENT_TAG,
)
from clevertap_assets.processes import process_alive

# Every status in which a run still holds, or will take, a worker: the ones a new run for the
# same asset would pile up behind.
IN_PROGRESS_STATUSES = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


# Statuses in which a run has (or had) a worker process that can die without reporting.
_WORKER_STATUSES = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def in_progress_runs(instance: DagsterInstance) -> Sequence[DagsterRun]:
    """Unfinished runs, after failing those whose worker is dead (see the module docstring)."""
    fail_dead_runs(instance)
    return instance.get_runs(RunsFilter(statuses=IN_PROGRESS_STATUSES))


def fail_dead_runs(instance: DagsterInstance) -> list[DagsterRun]:
    """Mark failed every started run whose worker process no longer exists; return them."""
    failed = []
    for run in instance.get_runs(RunsFilter(statuses=_WORKER_STATUSES)):
        worker = run_worker(instance, run.run_id)
        if worker is None or process_alive(*worker):
            continue
        current = instance.get_run_by_id(run.run_id)  # it may have ended since the query
        if current is None or current.status not in _WORKER_STATUSES:
            continue
        instance.report_run_failed(
            current,
            message=(
                f"The run worker (pid {worker[0]}) is gone without reporting an end (killed, "
                "out of memory, or its host lost); marked failed so its work is requested again."
            ),
        )
        # Run monitoring frees a dead run's pool slots only when it can see the worker.
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        failed.append(current)
    return failed


def run_worker(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """(pid, when it was known to run) of a run's worker process, from its engine events."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = entry.dagster_event
        if event is None or event.step_key is not None:
            continue
        pid = event.engine_event_data.metadata.get("pid")
        if pid is not None:
            return int(pid.value), entry.timestamp
    return None


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
    """One run of one event over consecutive days, read as a single window, with the event's
    checks: a scheduled duplicate or count mismatch shows on the asset like a manual one.

    A schedule's run key only dedupes within its tick (a tick retried after a daemon crash
    launches nothing twice); a sensor's dedupes forever. The event tag names the run in the
    runs list, where every scheduled run otherwise shows the same job.
    """
    return RunRequest(
        run_key=run_key,
        asset_selection=[key],
        asset_check_keys=event_check_keys(key),
        tags={
            **(tags or {}),
            EVENT_TAG: key.path[-1],
            ASSET_PARTITION_RANGE_START_TAG: first_day.isoformat(),
            ASSET_PARTITION_RANGE_END_TAG: last_day.isoformat(),
        },
    )
