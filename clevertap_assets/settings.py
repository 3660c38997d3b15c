"""The pipeline's settings, the fields of a CleverTap pipeline's form, read from the environment.

Settings that shape the asset graph (which events, which time zone, which destination) are
read when the definitions load, so a bad value stops the code location with one message that
names the variable and what is allowed, before any run starts. Credentials are not read here:
resources take them through `EnvVar`, so they are resolved only inside runs and never shown.
"""

import codecs
import csv
import io
import os
import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cached_property
from pathlib import Path
from typing import TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dotenv import load_dotenv
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clevertap_assets.days import local_today
from clevertap_assets.errors import SettingsError
from clevertap_assets.naming import event_slugs, is_valid_table_prefix, slug
from clevertap_assets.source.normalise import NormaliseOptions
from clevertap_assets.source.regions import base_url_for, normalise_region

DESTINATION_NAMES = ("duckdb", "snowflake", "bigquery", "redshift")
"""The warehouses `DESTINATION` may name; `destinations.registry` has a subpackage for each,
whose own settings hold everything else about it (its schema, its limits)."""
INGESTION_FREQUENCIES = "30m, or a whole number of hours from 1h to 24h"
_FREQUENCY = re.compile(r"^\s*(\d+)\s*(m|min|h|hr|hours?)\s*$", re.IGNORECASE)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WEBHOOK_URL = re.compile(r"^https?://[^/\s]+\S*$")
SMTP_SECURITY = ("starttls", "ssl", "none")
"""How e-mail alerts reach the SMTP server: STARTTLS (port 587), implicit TLS (465), plain."""


def parse_ingestion_frequency(value: str) -> timedelta:
    """30 minutes, or whole hours from 1 to 24, and nothing in between."""
    match = _FREQUENCY.match(value)
    if match:
        amount, unit = int(match.group(1)), match.group(2).lower()
        minutes = amount if unit.startswith("m") else amount * 60
        if minutes == 30 or (unit.startswith("h") and 1 <= amount <= 24):
            return timedelta(minutes=minutes)
    raise SettingsError(
        f"INGESTION_FREQUENCY={value!r} is not allowed; use {INGESTION_FREQUENCIES}"
    )


@dataclass(frozen=True)
class EventExport:
    """One row of the dashboard's events export: what the catalog says about the event."""

    name: str
    event_type: str
    description: str


def read_events_csv(path: Path) -> list[EventExport]:
    """The events of the dashboard's Schema > Events CSV export, in file order, once each.

    The export's layout is undocumented, so columns are found by name ("Event Name", "Event
    Type", "Description" in any case or spacing) and everything else (BOM, extra or missing
    optional columns, blank lines) is tolerated.
    """
    if not path.is_file():
        raise SettingsError(f"CLEVERTAP_EVENTS_CSV={str(path)!r}: no such file")
    with io.StringIO(_csv_text(path), newline="") as handle:
        rows = csv.reader(handle)
        header = next((row for row in rows if any(cell.strip() for cell in row)), None)
        if header is None:
            raise SettingsError(f"CLEVERTAP_EVENTS_CSV={str(path)!r} is empty")
        keys = [re.sub(r"[\s_]+", "", cell).lower() for cell in header]
        if "eventname" not in keys:
            raise SettingsError(
                f"CLEVERTAP_EVENTS_CSV={str(path)!r} has no event-name column "
                f"(found {', '.join(repr(c) for c in header)}); expected a column named 'Event Name'"
            )
        index = keys.index("eventname")
        named = [row for row in rows if len(row) > index and row[index].strip()]
    _refuse_names_alike_but_for_spaces(path, [row[index] for row in named])
    events: dict[str, EventExport] = {}
    for row in named:
        cells = dict(zip(keys, (cell.strip() for cell in row), strict=False))
        name = cells["eventname"]
        if name not in events:
            events[name] = EventExport(
                name, cells.get("eventtype", ""), cells.get("description", "")
            )
    return list(events.values())


def _refuse_names_alike_but_for_spaces(path: Path, names: list[str]) -> None:
    """A name's surrounding spaces are dropped (a spreadsheet's stray blank), so two names
    differing only there would silently be one event: refused instead."""
    spellings: dict[str, set[str]] = {}
    for name in names:
        spellings.setdefault(name.strip(), set()).add(name)
    alike = [sorted(found) for found in spellings.values() if len(found) > 1]
    if alike:
        shown = "; ".join(" and ".join(repr(name) for name in group) for group in alike)
        raise SettingsError(
            f"CLEVERTAP_EVENTS_CSV={str(path)!r} lists event names that differ only by "
            f"surrounding spaces ({shown}); names are read without surrounding spaces, so "
            "they would load as one event: keep one line of each"
        )


def read_event_names(path: Path) -> list[str]:
    return [event.name for event in read_events_csv(path)]


def _split_commas(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _is_owner(owner: str) -> bool:
    """Dagster's rule for asset owners, checked here so a bad one names ASSET_OWNERS."""
    return bool(_EMAIL.match(owner)) or (owner.startswith("team:") and len(owner) > 5)


def _csv_text(path: Path) -> str:
    """The file as text: UTF-8 (with or without a BOM) or UTF-16 with its BOM, which is what
    spreadsheet tools write for "Unicode text"; anything else is one clear sentence."""
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise SettingsError(
            f"CLEVERTAP_EVENTS_CSV={str(path)!r} is neither UTF-8 nor UTF-16 with a byte-order "
            f"mark (byte {exc.start} cannot be read as {encoding}); save it as 'CSV UTF-8'"
        ) from None


class PipelineSettings(BaseSettings):
    """What a user fills in on the pipeline form, as environment variables."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    pipeline_name: str = Field("clevertap", validation_alias="CLEVERTAP_PIPELINE_NAME")
    # Not secret (it names the account's concurrency pool); the passcode is read only as an
    # EnvVar inside runs.
    account_id: str | None = Field(None, validation_alias="CLEVERTAP_ACCOUNT_ID")
    region: str = Field("eu1", validation_alias="CLEVERTAP_REGION")
    api_url: str | None = Field(None, validation_alias="CLEVERTAP_API_URL")
    timezone: str = Field("UTC", validation_alias="CLEVERTAP_TIMEZONE")
    events_csv: Path = Field(Path("events.csv"), validation_alias="CLEVERTAP_EVENTS_CSV")
    exclude_events: str = Field("", validation_alias="CLEVERTAP_EXCLUDE_EVENTS")
    history_days: int = Field(30, ge=1, le=3650, validation_alias="CLEVERTAP_HISTORY_DAYS")
    start_date: date | None = Field(None, validation_alias="CLEVERTAP_START_DATE")
    lookback_days: int = Field(1, ge=0, le=30, validation_alias="LOOKBACK_DAYS")
    table_prefix: str = Field("", validation_alias="TABLE_PREFIX")
    auto_mapping: bool = Field(True, validation_alias="AUTO_MAPPING")
    # The dashboard's export shows the device and app fields; Get Events sends them only when
    # asked (`app=true`).
    app_fields: bool = Field(True, validation_alias="CLEVERTAP_APP_FIELDS")
    ingestion_frequency: str = Field("6h", validation_alias="INGESTION_FREQUENCY")
    destination: str = Field("duckdb", validation_alias="DESTINATION")
    max_record_bytes: int = Field(128 * 1024 * 1024, ge=1, validation_alias="MAX_RECORD_BYTES")
    max_row_bytes: int = Field(100 * 1024 * 1024, ge=1, validation_alias="MAX_ROW_BYTES")
    # CleverTap's webhook payload carries no event id and no request id header is documented:
    # a body equal to one received this many minutes before is taken for a re-delivery.
    webhook_redelivery_minutes: int = Field(
        24 * 60, ge=0, le=7 * 24 * 60, validation_alias="WEBHOOK_REDELIVERY_MINUTES"
    )
    # A secret (a Slack webhook URL embeds its token): SecretStr keeps it out of reprs, and
    # its validator's message never repeats it.
    alert_webhook_url: SecretStr | None = Field(None, validation_alias="ALERT_WEBHOOK_URL")
    # E-mail alerts, on when ALERT_EMAIL_TO names someone.
    alert_email_to: str = Field("", validation_alias="ALERT_EMAIL_TO")
    alert_email_from: str = Field("", validation_alias="ALERT_EMAIL_FROM")
    alert_smtp_host: str = Field("", validation_alias="ALERT_SMTP_HOST")
    alert_smtp_port: int = Field(587, ge=1, le=65535, validation_alias="ALERT_SMTP_PORT")
    alert_smtp_security: str = Field("starttls", validation_alias="ALERT_SMTP_SECURITY")
    alert_smtp_user: str = Field("", validation_alias="ALERT_SMTP_USER")
    alert_smtp_password: SecretStr | None = Field(None, validation_alias="ALERT_SMTP_PASSWORD")
    asset_owners: str = Field("", validation_alias="ASSET_OWNERS")

    @field_validator("alert_webhook_url", mode="before")
    @classmethod
    def _alert_webhook_url(cls, value: object) -> object:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if text is None or text == "":
            return None
        if not isinstance(text, str) or not _WEBHOOK_URL.match(text.strip()):
            raise SettingsError(
                "ALERT_WEBHOOK_URL is not an http(s) URL (its value is not shown: it is a "
                "secret); give the webhook's whole address, e.g. a Slack incoming webhook's"
            )
        return text.strip()

    @field_validator("alert_smtp_password", mode="before")
    @classmethod
    def _unset_smtp_password(cls, value: object) -> object:
        """`ALERT_SMTP_PASSWORD=` means no password."""
        return None if value == "" else value

    @model_validator(mode="after")
    def _alert_email(self) -> "PipelineSettings":
        """E-mail alerts need a sender, a server and valid addresses; a login needs both its
        halves. The password is never repeated."""
        if not self.alert_email_recipients:
            return self
        for name, value in (
            ("ALERT_EMAIL_FROM", self.alert_email_from),
            ("ALERT_SMTP_HOST", self.alert_smtp_host),
        ):
            if not value.strip():
                raise SettingsError(
                    f"ALERT_EMAIL_TO is set but {name} is not; e-mail alerts need both"
                )
        wrong = [
            a for a in [*self.alert_email_recipients, self.alert_email_from] if not _EMAIL.match(a)
        ]
        if wrong:
            raise SettingsError(
                f"ALERT_EMAIL_TO and ALERT_EMAIL_FROM must be e-mail addresses; not: "
                f"{', '.join(repr(a) for a in wrong)}"
            )
        if self.alert_smtp_security not in SMTP_SECURITY:
            raise SettingsError(
                f"ALERT_SMTP_SECURITY={self.alert_smtp_security!r} is not allowed; use "
                f"{', '.join(SMTP_SECURITY)}"
            )
        if bool(self.alert_smtp_user) != (self.alert_smtp_password is not None):
            raise SettingsError(
                "ALERT_SMTP_USER and ALERT_SMTP_PASSWORD go together: set both to log in, "
                "or neither"
            )
        return self

    @property
    def alert_email_recipients(self) -> list[str]:
        """ALERT_EMAIL_TO, comma-separated."""
        return _split_commas(self.alert_email_to)

    @field_validator("asset_owners")
    @classmethod
    def _asset_owners(cls, value: str) -> str:
        wrong = [owner for owner in _split_commas(value) if not _is_owner(owner)]
        if wrong:
            raise SettingsError(
                f"ASSET_OWNERS names {', '.join(repr(o) for o in wrong)}: each owner must be an "
                "e-mail address or a team name prefixed with 'team:' (e.g. team:data)"
            )
        return value

    @field_validator("pipeline_name")
    @classmethod
    def _pipeline_name(cls, value: str) -> str:
        if not 1 <= len(value) <= 255 or not value.strip():
            raise SettingsError(
                f"CLEVERTAP_PIPELINE_NAME must be 1 to 255 characters, got {len(value)}"
            )
        if not slug(value):
            raise SettingsError(
                f"CLEVERTAP_PIPELINE_NAME={value!r} needs at least one letter or digit"
            )
        return value

    @field_validator("account_id", mode="before")
    @classmethod
    def _account_id(cls, value: object) -> object:
        if value == "":
            return None
        if isinstance(value, str) and (not value.strip() or any(c.isspace() for c in value)):
            raise SettingsError(
                f"CLEVERTAP_ACCOUNT_ID={value!r} contains whitespace; copy the Project ID "
                "from Settings > Project in the CleverTap dashboard"
            )
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        return normalise_region(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(
                f"CLEVERTAP_TIMEZONE={value!r} is not an IANA time zone (e.g. UTC, Asia/Kolkata)"
            ) from None
        return value

    @field_validator("start_date", mode="before")
    @classmethod
    def _unset_start_date(cls, value: object) -> object:
        """`CLEVERTAP_START_DATE=` (as in .env.example) means unset."""
        return None if value == "" else value

    @field_validator("table_prefix")
    @classmethod
    def _table_prefix(cls, value: str) -> str:
        if value and not is_valid_table_prefix(value):
            raise SettingsError(
                f"TABLE_PREFIX={value!r} may hold only letters, digits and underscores"
            )
        return value

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if value not in DESTINATION_NAMES:
            raise SettingsError(
                f"DESTINATION={value!r} is not a destination; "
                f"allowed: {', '.join(DESTINATION_NAMES)}"
            )
        return value

    @field_validator("ingestion_frequency")
    @classmethod
    def _ingestion_frequency(cls, value: str) -> str:
        parse_ingestion_frequency(value)
        return value

    @model_validator(mode="after")
    def _events(self) -> "PipelineSettings":
        known = set(self.all_event_names)
        unknown = [name for name in self.excluded_event_names if name not in known]
        if unknown:
            raise SettingsError(
                f"CLEVERTAP_EXCLUDE_EVENTS names events that are not in {self.events_csv}: "
                f"{', '.join(repr(n) for n in unknown)} (names are case-sensitive)"
            )
        if not known:
            raise SettingsError(
                f"CLEVERTAP_EVENTS_CSV={str(self.events_csv)!r} lists no event under its "
                "'Event Name' column; export the events again from Settings > Schema > Events"
            )
        if not self.event_names:
            raise SettingsError(
                f"CLEVERTAP_EXCLUDE_EVENTS excludes all {len(known)} events of "
                f"{self.events_csv}: no event is left to replicate"
            )
        return self

    @model_validator(mode="after")
    def _start_date(self) -> "PipelineSettings":
        today = local_today(self.timezone)
        if self.start_date is not None and self.start_date > today:
            raise SettingsError(
                f"CLEVERTAP_START_DATE={self.start_date.isoformat()!r} is after today "
                f"({today.isoformat()} in {self.timezone}); give a past day or leave it unset"
            )
        return self

    @cached_property
    def exported_events(self) -> dict[str, EventExport]:
        return {event.name: event for event in read_events_csv(self.events_csv)}

    @property
    def all_event_names(self) -> list[str]:
        return list(self.exported_events)

    @property
    def owners(self) -> list[str]:
        """ASSET_OWNERS, comma-separated, as Dagster takes them: e-mails or `team:` names."""
        return _split_commas(self.asset_owners)

    @cached_property
    def event_slugs(self) -> dict[str, str]:
        """Every name of the CSV, excluded or not, so excluding one never renames another."""
        return event_slugs(self.all_event_names)

    @property
    def excluded_event_names(self) -> list[str]:
        """Comma-separated; a name holding a comma can be given in double quotes."""
        row = next(csv.reader([self.exclude_events], skipinitialspace=True), [])
        return [name.strip() for name in row if name.strip()]

    @property
    def event_names(self) -> list[str]:
        """The events to replicate: all of the CSV unless excluded."""
        excluded = set(self.excluded_event_names)
        return [name for name in self.all_event_names if name not in excluded]

    def normalise_options(self, event_name: str, row_limit_bytes: int) -> NormaliseOptions:
        """How an event's records become rows, as runs and the connection check read them;
        `row_limit_bytes` is MAX_ROW_BYTES as the destination lowers it (`Warehouse`)."""
        return NormaliseOptions(
            event_name=event_name,
            timezone=self.timezone,
            auto_mapping=self.auto_mapping,
            max_record_bytes=self.max_record_bytes,
            max_row_bytes=row_limit_bytes,
        )

    @property
    def pipeline_slug(self) -> str:
        return slug(self.pipeline_name)

    @property
    def redelivery_window(self) -> timedelta:
        return timedelta(minutes=self.webhook_redelivery_minutes)

    @property
    def base_url(self) -> str:
        return base_url_for(self.region, self.api_url)

    @property
    def ingestion_interval(self) -> timedelta:
        return parse_ingestion_frequency(self.ingestion_frequency)


CREDENTIAL_VARIABLES = {
    "CLEVERTAP_ACCOUNT_ID": "the Project ID under Settings > Project in the CleverTap dashboard",
    "CLEVERTAP_PASSCODE": "the Passcode under Settings > Project in the CleverTap dashboard",
}
"""Read from the environment (or `.env`) inside runs only, never into the settings."""


def missing_credentials() -> str | None:
    """One line naming every unset credential and where to find it; None when all are set.

    The CLI's check, the schedule and the sensors say the same thing, so a user who started
    the UI without `.env` reads why nothing runs rather than Dagster's raw `EnvVar` error."""
    missing = [name for name in CREDENTIAL_VARIABLES if not os.environ.get(name, "").strip()]
    if not missing:
        return None
    return "; ".join(f"{name} is not set: it is {CREDENTIAL_VARIABLES[name]}" for name in missing)


def credential(name: str) -> str:
    """One of CREDENTIAL_VARIABLES as set now, for the code that needs its value at the time
    (the schedule's account, the connection check); KeyError when unset, which
    `missing_credentials` tells first."""
    return os.environ[name].strip()


def load_settings(**overrides: object) -> PipelineSettings:
    """The pipeline's settings from the environment (and `.env`), checked (`read_settings`)."""
    return read_settings(PipelineSettings, **overrides)


Model = TypeVar("Model", bound=BaseSettings)


def read_settings(model: type[Model], **overrides: object) -> Model:
    """Read the environment (and `.env`) into settings, turning pydantic's report into one line
    per bad setting that names the variable, so users never see validator internals."""
    unknown = sorted(set(overrides) - _setting_names(model))
    if unknown:  # the environment may hold anything; code naming a setting must not miss
        raise TypeError(f"{model.__name__} has no setting {', '.join(unknown)}")
    load_dotenv(override=False)
    try:
        return model(**overrides)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(model, e) for e in exc.errors())) from None


def _setting_names(model: type[BaseSettings]) -> set[str]:
    """Each field's name and its variable: what an override may be given as."""
    return {
        name
        for field_name, field in model.model_fields.items()
        for name in (field_name, field.validation_alias)
        if isinstance(name, str)
    }


def _describe(model: type[BaseSettings], error: dict) -> str:
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)
    if not error["loc"]:  # a check across settings: its input is every setting, never shown
        return f"settings: {error['msg']}"
    name = str(error["loc"][0])
    field = model.model_fields.get(name)
    variable = field.validation_alias if field and field.validation_alias else name
    return f"{variable}={error.get('input')!r}: {error['msg']}"


SILENCE_SECONDS_ENV = "CLEVERTAP_RUN_SILENCE_SECONDS"
DEFAULT_SILENCE_SECONDS = 180.0
"""Long enough for a storage outage or a stalled host to pass without judging a live run;
short enough that a tick after a crash finds the account free."""
MIN_SILENCE_SECONDS = 3.0


def silence_seconds() -> float:
    """`CLEVERTAP_RUN_SILENCE_SECONDS`: how long a started run may go without a heartbeat."""
    configured = os.environ.get(SILENCE_SECONDS_ENV, "").strip()
    if not configured:
        return DEFAULT_SILENCE_SECONDS
    try:
        value = float(configured)
    except ValueError:
        value = 0.0
    if value < MIN_SILENCE_SECONDS:
        raise ValueError(
            f"{SILENCE_SECONDS_ENV}={configured!r} is not allowed: seconds a started run may "
            f"go without a heartbeat, at least {MIN_SILENCE_SECONDS:g} "
            f"(default {DEFAULT_SILENCE_SECONDS:g})"
        )
    return value


def dagster_home() -> str | None:
    """`DAGSTER_HOME`, the instance's folder, when set."""
    return os.environ.get("DAGSTER_HOME") or None


def instance_run_launcher() -> str | None:
    """The run launcher class of `$DAGSTER_HOME`'s instance, read from its configuration
    without starting the launcher (the K8s one needs a cluster to start); None without a home
    to read (Dagster itself says what is wrong with one that is not a directory)."""
    from dagster._core.instance.ref import InstanceRef

    home = dagster_home()
    if not home or not Path(home).is_dir():
        return None
    launcher = InstanceRef.from_dir(home).run_launcher_data
    return launcher.class_name if launcher else None
