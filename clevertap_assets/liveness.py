"""Which runs are alive, and which run reads an account, kept in the Dagster instance alone.

Process ids mean nothing across containers, and a run killed with its worker (`kill -9`, the
OOM killer, a lost node) never reports its end. So every run that reads CleverTap or loads
webhooks beats a heartbeat into the instance, and a started run silent for `silence_seconds()`
is dead wherever it ran: it is marked failed and its pool slots are freed, so its work is
requested again.

The account's reader is a slot of the account's pool in the instance's concurrency table. Runs
from the run queue start only when the pool has room (run-granularity pools), so their claim is
immediate; a headless run (`dagster asset materialize`, `materialize` in Python) bypasses the
queue and waits here, taking the slot of a holder that ended or went silent.
"""

import random
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager

from dagster import AssetKey, DagsterInstance, DagsterRun, DagsterRunStatus, RunRecord, RunsFilter

from clevertap_assets.keys import PRIORITY_TAG
from clevertap_assets.settings import SILENCE_SECONDS_ENV, silence_seconds

HEARTBEAT_EVERY_SECONDS = 10.0
LEASE_POLL_SECONDS = (1.0, 4.0)
LEASE_LOG_EVERY_SECONDS = 60.0

_LIVE_STATUSES = [DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]


def _heartbeat_key(run_id: str) -> str:
    return f"clevertap/heartbeat/{run_id}"


@contextmanager
def heartbeat(instance: DagsterInstance, run_id: str, log) -> Iterator[None]:
    """Beat into the instance while the block runs, three times per silence at least. A beat
    that fails (the instance's database restarting) is logged and tried again: it must not
    fail a run that is loading."""
    stop = threading.Event()
    every = min(HEARTBEAT_EVERY_SECONDS, silence_seconds() / 3)

    def beat() -> None:
        while True:
            try:
                instance.run_storage.set_cursor_values({_heartbeat_key(run_id): f"{time.time()}"})
            except Exception as exc:  # the storage's own errors vary by database
                log.warning(f"heartbeat not recorded ({type(exc).__name__}); trying again")
            if stop.wait(every):
                return

    thread = threading.Thread(target=beat, name="clevertap-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _heartbeats(instance: DagsterInstance, records: Sequence[RunRecord]) -> dict[str, float]:
    """The latest heartbeat of each run that beat one."""
    keys = {
        _heartbeat_key(record.dagster_run.run_id): record.dagster_run.run_id for record in records
    }
    values = instance.run_storage.get_cursor_values(set(keys))
    return {keys[key]: float(value) for key, value in values.items() if value}


def _last_sign_of_life(record: RunRecord, beats: dict[str, float]) -> float:
    started = record.start_time or record.create_timestamp.timestamp()
    return max(started, beats.get(record.dagster_run.run_id, 0.0))


def last_signs_of_life(instance: DagsterInstance, records: Sequence[RunRecord]) -> dict[str, float]:
    """Per run, when it was last known alive: its latest heartbeat, or its start."""
    beats = _heartbeats(instance, records)
    return {record.dagster_run.run_id: _last_sign_of_life(record, beats) for record in records}


def fail_silent_runs(
    instance: DagsterInstance,
    assets: Collection[AssetKey] = (),
    run_ids: Collection[str] | None = None,
    now: float | None = None,
) -> list[DagsterRun]:
    """Mark failed each started run (among `run_ids` if given) that beats a heartbeat, or
    writes one of `assets`, and has been silent for longer than `silence_seconds()`; free
    its pool slots and return it. A run that never beat is judged from its start, which is
    what a run killed before its first beat leaves."""
    records = instance.get_run_records(
        RunsFilter(statuses=_LIVE_STATUSES, run_ids=list(run_ids) if run_ids else None)
    )
    if not records:
        return []
    beats = _heartbeats(instance, records)
    judged = [
        record
        for record in records
        if record.dagster_run.run_id in beats
        or set(assets) & set(record.dagster_run.asset_selection or ())
    ]
    now = time.time() if now is None else now
    silence = silence_seconds()
    failed = []
    for record in judged:
        run_id = record.dagster_run.run_id
        alive_at = _last_sign_of_life(record, beats)
        if now - alive_at <= silence:
            continue
        current = instance.get_run_by_id(run_id)  # it may have ended since the query
        if current is None or current.status not in _LIVE_STATUSES:
            continue
        instance.report_run_failed(
            current,
            message=(
                f"No heartbeat from this run for {now - alive_at:.0f} s (more than "
                f"{SILENCE_SECONDS_ENV}={silence:g}): its worker is gone (killed, out of "
                "memory, or its host or code server lost). Marked failed so its work is "
                "requested again."
            ),
        )
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
        failed.append(current)
    return failed


def _run_priority(run: DagsterRun | None) -> int:
    text = (run.tags if run else {}).get(PRIORITY_TAG, "0")
    try:
        return int(text)
    except ValueError:
        return 0


@contextmanager
def account_lease(
    instance: DagsterInstance, pool: str, run_id: str, step_key: str, log
) -> Iterator[int]:
    """Hold one of the account pool's slots (the account's reader) for the block; yields the
    pool's limit, the number of readers that may share the account's request slots.

    Waiting sleeps; a holder whose run ended, or went silent, loses its slot. Where the
    executor already claimed the slot (op-granularity pools), it is used as it is."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        yield 1
        return
    limit = _pool_limit(instance, pool)
    if _holds(instance, pool, run_id, step_key):
        yield limit
        return
    priority = _run_priority(instance.get_run_by_id(run_id))
    waiting_since = logged_at = time.monotonic()
    try:
        while not storage.claim_concurrency_slot(pool, run_id, step_key, priority).is_claimed:
            _free_dead_holders(instance, pool, run_id)
            if time.monotonic() - logged_at >= LEASE_LOG_EVERY_SECONDS:
                logged_at = time.monotonic()
                log.info(
                    f"waiting {logged_at - waiting_since:.0f} s for the account's reader "
                    f"(pool {pool}), held by run(s) {', '.join(_holders(instance, pool))}"
                )
            time.sleep(random.uniform(*LEASE_POLL_SECONDS))
        yield limit
    finally:
        storage.free_concurrency_slot_for_step(run_id, step_key)


def _pool_limit(instance: DagsterInstance, pool: str) -> int:
    """The pool's limit, set to the instance's default (else 1) where no one set it: without
    a limit every reader would take the account's three request slots."""
    storage = instance.event_log_storage
    if pool not in storage.get_concurrency_keys():
        storage.initialize_concurrency_limit_to_default(pool)
        if storage.get_concurrency_info(pool).slot_count == 0:
            storage.set_concurrency_slots(pool, 1)
    return max(1, storage.get_concurrency_info(pool).slot_count)


def _holders(instance: DagsterInstance, pool: str) -> list[str]:
    """The runs holding the pool's slots, or assigned one they have yet to claim."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    assigned = [step.run_id for step in info.pending_steps if step.assigned_timestamp]
    return sorted({slot.run_id for slot in info.claimed_slots} | set(assigned))


def _holds(instance: DagsterInstance, pool: str, run_id: str, step_key: str) -> bool:
    claimed = instance.event_log_storage.get_concurrency_info(pool).claimed_slots
    return any(slot.run_id == run_id and slot.step_key == step_key for slot in claimed)


def _free_dead_holders(instance: DagsterInstance, pool: str, waiting_run_id: str) -> None:
    """Free the slots, and the places in the pool's queue, of runs that ended or went silent:
    a waiter killed while queued would otherwise be assigned the next free slot and keep it."""
    info = instance.event_log_storage.get_concurrency_info(pool)
    others = {slot.run_id for slot in info.claimed_slots} | {s.run_id for s in info.pending_steps}
    others.discard(waiting_run_id)
    if not others:
        return
    fail_silent_runs(instance, run_ids=others)
    for run_id in others:
        run = instance.get_run_by_id(run_id)
        if run is None or run.status not in [*_LIVE_STATUSES, DagsterRunStatus.STARTING]:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
