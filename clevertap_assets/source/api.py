"""What CleverTap's Get Events API answers besides records: the failures a caller may handle,
and what reading cost. Apart from the client so that the read path (`batch.export`) needs
nothing of Dagster."""

from dataclasses import asdict, dataclass


class CleverTapError(Exception):
    """Anything that stops a CleverTap call; subclasses name the cases a caller may handle."""


class CleverTapAuthError(CleverTapError):
    """Bad account id, passcode or region: retrying cannot help."""


class ExportNotAllowedError(CleverTapError):
    """CleverTap refuses to export this event (notification events): skip it, load the rest."""

    def __init__(self, event_name: str) -> None:
        super().__init__(
            f"CleverTap does not allow exporting event {event_name!r} "
            "(notification events cannot be exported)"
        )
        self.event_name = event_name


class UnknownEventError(CleverTapError):
    """The event name is not in the project; usually a casing or spelling difference."""

    def __init__(self, event_name: str) -> None:
        super().__init__(
            f"CleverTap does not know event {event_name!r}; event names are case-sensitive, "
            "compare with Settings > Schema > Events in the dashboard"
        )
        self.event_name = event_name


class CursorExpiredError(CleverTapError):
    """The cursor aged out: the window must be reopened and read again from the start."""

    def __init__(self, event_name: str, detail: str) -> None:
        super().__init__(
            f"the export cursor for event {event_name!r} expired ({detail}); "
            "reopen the window and read it again from the start"
        )
        self.event_name = event_name


class CleverTapProtocolError(CleverTapError):
    """An answer that breaks the documented flow (empty body, misuse, a cursor that repeats)."""


@dataclass
class FetchStats:
    """What reading cost, reported as run metadata so slow or flaky windows are visible.

    Meant for one reader at a time; give each thread its own and add them up afterwards.
    """

    requests: int = 0
    retries: int = 0
    pages: int = 0
    records: int = 0
    bytes_received: int = 0
    backoff_seconds: float = 0.0

    @classmethod
    def combined(cls, parts: list["FetchStats"]) -> "FetchStats":
        """The sum of several readers' stats (one per cursor)."""
        total = cls()
        for part in parts:
            for name, value in asdict(part).items():
                setattr(total, name, getattr(total, name) + value)
        return total

    def as_metadata(self) -> dict[str, int | float]:
        return {**asdict(self), "backoff_seconds": round(self.backoff_seconds, 3)}
