"""The pipeline's "TEST & CONTINUE": prove the settings, credentials and CleverTap work together.

A check is a list of steps that share one state and fill in one report, so the same code runs
from `clevertap-assets check`, from `connection_check_job` in Dagster, and from tests, and a
destination check is one more step appended to `CHECK_STEPS`.
"""

from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TypeVar

import dagster as dg
from pydantic import Field

from clevertap_assets.batch.parse_processes import parse_raw_page
from clevertap_assets.days import day_bounds, local_today
from clevertap_assets.destinations.registry import destination_for, warehouse_for
from clevertap_assets.destinations.settings import Warehouse
from clevertap_assets.settings import (
    CREDENTIAL_VARIABLES,
    PipelineSettings,
    SettingsError,
    credential,
    load_settings,
    missing_credentials,
)
from clevertap_assets.source.api import CleverTapError, ExportNotAllowedError
from clevertap_assets.source.client import CleverTapResource
from clevertap_assets.source.normalise import NormaliseOptions
from clevertap_assets.source.zone_check import zone_mismatch

# Enough to prove records come back without pulling a full 5000-record page.
CHECK_BATCH_SIZE = 100
T = TypeVar("T")


class CheckFailed(Exception):
    """A step found a problem; the message is the one line the user sees."""


@dataclass
class ConnectionReport:
    """What the check found; `lines()` is what the command prints and the job logs."""

    ok: bool = False
    base_url: str | None = None
    account_id: str | None = None
    region: str | None = None
    events_selected: int | None = None
    event_tested: str | None = None
    day: date | None = None
    records_in_first_page: int | None = None
    destination: str | None = None
    notes: list[str] = field(default_factory=list)
    failure: str | None = None

    def lines(self) -> list[str]:
        if not self.ok:
            return [f"CleverTap connection check FAILED: {self.failure}"]
        return [
            "CleverTap connection check OK",
            f"  base URL:              {self.base_url}",
            f"  account id:            {self.account_id}",
            f"  region:                {self.region}",
            f"  events selected:       {self.events_selected}",
            f"  event tested:          {self.event_tested} on {self.day}",
            f"  records in first page: {self.records_in_first_page}",
            f"  destination:           {self.destination}",
            *(f"  note: {note}" for note in self.notes),
        ]


@dataclass
class CheckState:
    """What earlier steps hand to later ones; the passcode stays in here, never in the report."""

    report: ConnectionReport
    day_text: str | None = None
    build_definitions: Callable[[PipelineSettings], dg.Definitions] | None = None
    """What the code location loads (the CLI passes it; inside Dagster it has loaded already)."""
    settings: PipelineSettings | None = None
    warehouse: Warehouse | None = None
    """The chosen destination's settings, read with the pipeline's."""
    credentials: dict[str, str] = field(default_factory=dict)


CheckStep = Callable[[CheckState], None]


def check_settings(state: CheckState) -> None:
    """Settings first: every later step needs the region, events and time zone."""
    settings = load_settings()
    state.settings, state.warehouse = settings, warehouse_for(settings)
    if state.build_definitions is not None:
        try:
            dg.Definitions.validate_loadable(state.build_definitions(settings))
        except dg.DagsterError as exc:
            first_line = str(exc).strip().splitlines()[0]
            raise CheckFailed(f"Dagster cannot load the definitions: {first_line}") from None
    report = state.report
    report.day = _local_day(state.day_text, settings.timezone)
    report.base_url, report.region = settings.base_url, settings.region
    report.events_selected = len(settings.event_names)


def check_credentials(state: CheckState) -> None:
    """Credentials come from the environment only (never from settings), as the runs read them."""
    missing = missing_credentials()
    if missing:
        raise CheckFailed(missing)
    state.credentials = {name: credential(name) for name in CREDENTIAL_VARIABLES}
    state.report.account_id = state.credentials["CLEVERTAP_ACCOUNT_ID"]


def check_clevertap(state: CheckState) -> None:
    """Reach the host, authenticate and read one page of the first event CleverTap will export.

    Notification events are refused by design, so they are noted and the next event is tried.
    """
    settings, day = _require(state.settings, "settings"), _require(state.report.day, "day")
    warehouse = _require(state.warehouse, "settings")
    if not settings.event_names:
        raise CheckFailed(
            f"no events selected: {settings.events_csv} minus CLEVERTAP_EXCLUDE_EVENTS is empty"
        )
    with _resource(state) as clevertap:
        for event_name in settings.event_names:
            try:
                with closing(clevertap.iter_raw_pages(event_name, day, day)) as pages:
                    first_page = next(pages, b"[]")
            except ExportNotAllowedError:
                state.report.notes.append(f"skipped {event_name!r}: CleverTap does not export it")
                continue
            state.report.event_tested = event_name
            state.report.records_in_first_page = _check_time_zone(
                settings.normalise_options(event_name, warehouse.row_limit_bytes),
                settings.timezone,
                day,
                first_page,
            )
            return
    raise CheckFailed(
        f"none of the {len(settings.event_names)} selected events can be exported from CleverTap"
    )


def _check_time_zone(options: NormaliseOptions, timezone: str, day: date, page: bytes) -> int:
    """The page's records, read as a run reads them: a share of them outside the day means
    CLEVERTAP_TIMEZONE is not the project's zone (visible with epoch `ts` only: a 14-digit
    `ts` is the project's local time, always inside its day). Returns the records read."""
    window = day_bounds(day, day)
    parsed = parse_raw_page(page, options, window)
    mismatch = zone_mismatch(
        options.event_name,
        (day, day),
        parsed.received,
        parsed.outside_window,
        parsed.outside,
        timezone,
    )
    if mismatch is not None:
        raise CheckFailed(mismatch)
    return parsed.received


def check_warehouse(state: CheckState) -> None:
    """The destination too: reachable, authenticated, schema ready."""
    settings = _require(state.settings, "settings")
    warehouse = _require(state.warehouse, "settings")
    try:
        state.report.destination = destination_for(settings).check(warehouse)
    except SettingsError:
        raise
    except Exception as exc:
        raise CheckFailed(f"destination {settings.destination}: {exc}") from None


CHECK_STEPS: list[CheckStep] = [check_settings, check_credentials, check_clevertap, check_warehouse]
"""The steps in order."""


def check_connection(
    day: str | None = None,
    steps: list[CheckStep] | None = None,
    build_definitions: Callable[[PipelineSettings], dg.Definitions] | None = None,
) -> ConnectionReport:
    """Run the steps until one fails; the report says how far it got and why it stopped."""
    state = CheckState(report=ConnectionReport(), day_text=day, build_definitions=build_definitions)
    for step in CHECK_STEPS if steps is None else steps:
        try:
            step(state)
        except (CheckFailed, CleverTapError, SettingsError) as exc:
            state.report.failure = str(exc)
            return state.report
    state.report.ok = True
    return state.report


def run_connection_check(
    day: str | None = None,
    build_definitions: Callable[[PipelineSettings], dg.Definitions] | None = None,
) -> int:
    """`clevertap-assets check`: print the report, exit 0 when everything answered; with
    `build_definitions`, the settings pass only if the code location would load with them."""
    report = check_connection(day, build_definitions=build_definitions)
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


class ConnectionCheckConfig(dg.Config):
    day: str | None = Field(None, description="local day YYYY-MM-DD to read (default: yesterday)")


@dg.op(description="TEST & CONTINUE: settings, credentials and one page from CleverTap")
def clevertap_connection_check(
    context: dg.OpExecutionContext, config: ConnectionCheckConfig
) -> None:
    report = check_connection(config.day)
    for line in report.lines():
        context.log.info(line)
    if not report.ok:
        raise dg.Failure(description=report.lines()[0])


@dg.job(description="Check the CleverTap connection the way `clevertap-assets check` does")
def connection_check_job() -> None:
    clevertap_connection_check()


def _resource(state: CheckState) -> CleverTapResource:
    """A client that gives up quickly: a check should answer in seconds, not after a backoff
    schedule sized for long backfills."""
    settings = _require(state.settings, "settings")
    return CleverTapResource(
        account_id=state.credentials["CLEVERTAP_ACCOUNT_ID"],
        passcode=state.credentials["CLEVERTAP_PASSCODE"],
        region=settings.region,
        api_url=settings.api_url,
        batch_size=CHECK_BATCH_SIZE,
        timeout_seconds=30,
        max_wait_seconds=30,
        max_backoff_seconds=5,
    )


def _local_day(day_text: str | None, timezone: str) -> date:
    """CleverTap's windows are whole days in the project's time zone, so "yesterday" is too."""
    if day_text is None:
        return local_today(timezone) - timedelta(days=1)
    try:
        return date.fromisoformat(day_text)
    except ValueError:
        raise CheckFailed(f"--day {day_text!r} is not a date YYYY-MM-DD") from None


def _require(value: T | None, what: str) -> T:
    """Steps run in order; a missing input means a step list was assembled out of order."""
    if value is None:
        raise CheckFailed(f"check step ran before {what} was known: fix the order of CHECK_STEPS")
    return value
