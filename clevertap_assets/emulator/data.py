"""Deterministic synthetic CleverTap records: the same config (seed included) gives the same
records on any machine, built one at a time on demand, so any window can be served and its
truth stated without keeping it in memory."""

import hashlib
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from clevertap_assets.emulator.config import EmulatorConfig

OVERSIZE_PROPERTY = "Large Blob"
_USERS = 5000  # profile pool: the same people act across events and days, as in a real app
_SECOND_STRIDE = 7919  # prime, coprime to 82800/86400/90000: a bijection over a day's seconds
_PROFILE_NOW = 1_750_000_000  # profiles are "state now": a fixed now keeps them deterministic


def _digest(*parts: object) -> int:
    """A 256-bit number from the parts: one hash per record is far cheaper than a seeded
    `random.Random`, and it is stable across processes (unlike `hash`)."""
    key = "|".join(str(part) for part in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big")


class _Draw:
    """Consumes a hash number digit by digit, so one digest yields all of a record's choices."""

    def __init__(self, number: int) -> None:
        self.number = number

    def below(self, n: int) -> int:
        self.number, value = divmod(self.number, n)
        if self.number < n:  # a digest lasts about 30 draws; stretch it deterministically
            self.number = _digest(value, n, self.number)
        return value

    def pick(self, options: tuple[Any, ...]) -> Any:
        return options[self.below(len(options))]

    def chance(self, percent: int) -> bool:
        return self.below(100) < percent


_FIRST = ("Asha", "Ravi", "Maria", "John", "Wei", "Fatima", "Lucas", "Aiko", "Omar", "Priya")
_LAST = ("Sharma", "Silva", "Smith", "Chen", "Khan", "Mueller", "Rossi", "Tanaka", "Okafor")
_CITIES = ("Mumbai", "Bengaluru", "São Paulo", "Berlin", "Jakarta", "Dubai", "Singapore", "Seoul")
_DEVICES = (
    ("Android", "Samsung", "Sm-s821b", "14"),
    ("Android", "Xiaomi", "Redmi Note 12", "13"),
    ("Android", "Google", "Pixel 8", "15"),
    ("iOS", "Apple", "iPhone15,2", "17.5"),
    ("iOS", "Apple", "iPhone13,1", "16.7"),
    ("Web", "", "", ""),
)
_PRODUCTS = (
    ("Trail Shoes", "Footwear", 4999),
    ("Cotton Tee", "Apparel", 799),
    ("Noise Buds", "Electronics", 2499),
    ("Steel Bottle", "Home", 649),
    ("Yoga Mat", "Fitness", 1299),
    ("Desk Lamp", "Home", 1899),
)
_SOURCES = ("Mobile", "Mobile", "API", "Web")
_UTM = (("google-play", "organic"), ("google", "cpc"), ("newsletter", "email"), ("", "Direct"))


def _profile_base(seed: int, user: int) -> dict[str, Any]:
    """A person's full profile; request flags later drop the parts not asked for."""
    draw = _Draw(_digest(seed, "user", user))
    object_id = f"__{_digest(seed, 'oid', user):064x}"[:32]
    profile: dict[str, Any] = {"objectId": object_id}
    platform, make, model, os_version = draw.pick(_DEVICES)
    first, last = draw.pick(_FIRST), draw.pick(_LAST)
    if draw.chance(80):  # identified users; the rest are anonymous devices
        identity = f"{_digest(seed, 'identity', user):064x}"[:24]
        email = f"{first}.{last}{user}@example.com".lower()
        profile.update(identity=identity, all_identities=[identity, email], email=email)
        profile["name"] = f"{first} {last}"
        phone = 910_000_000_000 + draw.below(10**9)
        shape = draw.below(10)
        if shape < 5:
            profile["phone"] = phone
        elif shape < 7:
            profile["phone"] = f"+{phone}"
    profile["platform"] = platform
    if platform != "Web":
        token = f"{_digest(seed, 'push', user):064x}"[:40]
        profile["push_token"] = f"{'fcm' if platform == 'Android' else 'apns'}:{token}"
    profile["_app"] = {
        "os_version": os_version,
        "app_version": f"9.{draw.below(3)}.{draw.below(10)}.{draw.below(9)}",
        "make": make,
        "model": model,
    }
    signup = _PROFILE_NOW - draw.below(3 * 365 * 86400)
    data: dict[str, Any] = {"signupon": f"$D_{signup}", "City": draw.pick(_CITIES)}
    if draw.chance(70):
        data["rating"] = 1 + draw.below(5)
    data["Customer Type"] = draw.pick(("Gold", "Silver", "New"))
    profile["_data"] = data
    launches = 1 + draw.below(900)
    profile["_events"] = {
        "App Launched": {
            "count": launches,
            "first_seen": signup,
            "last_seen": _PROFILE_NOW - draw.below(86400 * 30),
        },
        "Product Viewed": {
            "count": draw.below(launches * 3 + 1),
            "first_seen": signup + draw.below(86400),
            "last_seen": _PROFILE_NOW - draw.below(86400 * 60),
        },
    }
    return profile


def _shape_profile(base: dict[str, Any], app: bool, events: bool, profile: bool) -> dict:
    shaped = {key: value for key, value in base.items() if not key.startswith("_")}
    if app:
        shaped.update(base["_app"])
    if profile:
        shaped["profileData"] = base["_data"]
    if events:
        shaped["events"] = base["_events"]
    return shaped


def _items(draw: _Draw) -> list[dict[str, Any]]:
    items = []
    for _ in range(1 + draw.below(3)):
        name, category, price = draw.pick(_PRODUCTS)
        items.append(
            {
                "Product Name": name,
                "Category": category,
                "Price": price,
                "Quantity": 1 + draw.below(3),
            }
        )
    return items


def _event_specific_props(event: str, draw: _Draw, epoch: int) -> dict[str, Any]:
    """Properties by the kind of event, so tables differ the way real events do."""
    if event == "Charged":
        items = _items(draw)
        amount = sum(item["Price"] * item["Quantity"] for item in items)
        return {
            "Amount": amount if draw.chance(60) else amount + draw.below(100) / 100,
            "Currency": "INR",
            "Payment Mode": draw.pick(("UPI", "Credit Card", "COD", "Wallet")),
            "Charged ID": f"ord-{draw.below(10**9):09d}",
            "Delivery Date": f"$D_{epoch + 86400 * (2 + draw.below(5))}",
            "Items": items,
        }
    if "Product" in event or "Cart" in event:
        name, category, price = draw.pick(_PRODUCTS)
        return {"Product Name": name, "Category": category, "Price": price}
    if "Search" in event:
        return {"Query": draw.pick(("shoes", "tee", "lamp")), "Results": draw.below(200)}
    if "Checkout" in event:
        return {"Cart Value": 500 + draw.below(20000), "Items Count": 1 + draw.below(6)}
    if "UTM" in event:
        utm_source, utm_medium = draw.pick(_UTM)
        return {"utm_source": utm_source, "utm_medium": utm_medium, "utm_campaign": "spring"}
    return {"Screen": draw.pick(("Home", "Search", "Offers", "Profile")), "Value": draw.below(50)}


def _local_day(day: date, tz: ZoneInfo) -> tuple[int, int]:
    """The day's first instant (UTC epoch) and its length: DST days last 23 or 25 hours.

    Midnight can be missing or doubled around DST: `fold=0` midnight maps to the day's first
    real instant in both cases, which is what a local-day window means.
    """
    start = int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp())
    after = day + timedelta(days=1)
    end = int(datetime(after.year, after.month, after.day, tzinfo=tz).timestamp())
    return start, end - start


@dataclass(frozen=True)
class _DayPlan:
    """What every record of one (event, day) shares, worked out once per day, not per record."""

    start: int
    length: int
    shift: int
    key_prefix: str
    extra_props: dict[str, object]
    oversize: int


def _compact_ts(moment: datetime) -> int:
    return (
        moment.year * 10**10
        + moment.month * 10**8
        + moment.day * 10**6
        + moment.hour * 10**4
        + moment.minute * 100
        + moment.second
    )


@dataclass(frozen=True)
class Flags:
    app: bool = False
    events: bool = True
    profile: bool = True


class Generator:
    """Builds record i of (event, day) on demand: nothing is materialised beyond one page.

    Record i's second within the day is a bijection of i (for i below the day's length) and
    its person shifts with i // length, so two distinct records never render to the same JSON.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.tz = ZoneInfo(config.timezone)
        self._profiles: dict[tuple[int, Flags], dict] = {}
        self._plans: dict[tuple[str, date], _DayPlan] = {}

    def plan(self, event: str, day: date) -> _DayPlan:
        found = self._plans.get((event, day))
        if found is None:
            config = self.config
            start, length = _local_day(day, self.tz)
            since = config.extra_event_props_from
            found = self._plans[(event, day)] = _DayPlan(
                start=start,
                length=length,
                shift=_digest(config.seed, "shift", event, day),
                key_prefix=f"{config.seed}|{event}|{day}|",
                extra_props=config.extra_event_props if since is None or day >= since else {},
                oversize=config.oversize_records.get((event, day), 0),
            )
        return found

    def base_count(self, event: str, day: date) -> int:
        """Varies by (event, day) between half and one and a half times the configured mean."""
        spread = _digest(self.config.seed, "count", event, day) % 1001 / 1000
        return round(self.config.records_per_day * (0.5 + spread))

    def profile(self, user: int, flags: Flags) -> dict:
        key = (user, flags)
        found = self._profiles.get(key)
        if found is None:
            base = _profile_base(self.config.seed, user)
            found = self._profiles[key] = _shape_profile(
                base, flags.app, flags.events, flags.profile
            )
        return found

    def record(self, event: str, day: date, index: int, flags: Flags) -> dict[str, Any]:
        plan = self.plan(event, day)
        second = (_SECOND_STRIDE * index + plan.shift) % plan.length
        user = (second + index // plan.length + plan.shift) % _USERS
        epoch = plan.start + second
        key = (plan.key_prefix + str(index)).encode()
        draw = _Draw(int.from_bytes(hashlib.blake2b(key, digest_size=32).digest(), "big"))
        record: dict[str, Any] = {"profile": self.profile(user, flags)}
        if draw.chance(75):
            utm_source, utm_medium = draw.pick(_UTM)
            record["session_props"] = {
                "session_source": "Campaign" if utm_source else "Direct",
                "utm_source": utm_source,
                "utm_medium": utm_medium,
            }
        if self.config.ts_format == "epoch":
            record["ts"] = epoch
        else:
            record["ts"] = _compact_ts(datetime.fromtimestamp(epoch, self.tz))
        props = _event_specific_props(event, draw, epoch)
        version = 1900 + draw.below(100)
        props["CT Source"] = draw.pick(_SOURCES)
        props["CT App Version"] = version if draw.chance(70) else str(version)
        props["Occurred On"] = f"$D_{epoch - draw.below(3600)}"
        props.update(plan.extra_props)
        if plan.oversize and index == 0:
            props[OVERSIZE_PROPERTY] = "x" * plan.oversize
        record["event_props"] = props
        return record
