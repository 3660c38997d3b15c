import hashlib
from datetime import UTC, datetime

import orjson
import polars as pl

from clevertap_assets.naming import ColumnNames
from clevertap_assets.source.normalise import (
    SYSTEM_COLUMNS,
    NormaliseOptions,
    load_records,
    normalise_page,
)

RECORD = {
    "profile": {
        "objectId": "__068b9a97",
        "identity": "604c604a",
        "all_identities": ["604c604a", "x@example.com"],
        "phone": 911111111111,
        "profileData": {"signupon": "$D_1615618122", "rating": 5},
    },
    "session_props": {"session_source": "Direct"},
    "ts": 20250607130935,
    "event_props": {"Fare": 5149, "Leave Date": "$D_1749670800", "CT Source": "API"},
}


def options(**overrides: object) -> NormaliseOptions:
    values = {
        "event_name": "Flight Booked",
        "timezone": "Asia/Kolkata",
        "auto_mapping": True,
        "max_record_bytes": 1_000_000,
        "max_row_bytes": 1_000_000,
    }
    return NormaliseOptions(**{**values, **overrides})


def test_record_id_is_sha256_of_sorted_compact_json():
    frame = normalise_page([RECORD], options()).frame
    canonical = orjson.dumps(RECORD, option=orjson.OPT_SORT_KEYS)
    assert b" " not in canonical.replace(b"Leave Date", b"").replace(b"CT Source", b"")
    assert frame["_record_id"].to_list() == [hashlib.sha256(canonical).hexdigest()]


def test_auto_mapping_flattens_leaves_into_snake_case_paths():
    frame = normalise_page([RECORD], options()).frame
    row = frame.row(0, named=True)
    assert row["profile__object_id"] == "__068b9a97"
    assert row["profile__profile_data__rating"] == 5
    assert row["event_props__ct_source"] == "API"
    assert row["event_props__fare"] == 5149
    assert row["session_props__session_source"] == "Direct"
    assert orjson.loads(row["profile__all_identities"]) == ["604c604a", "x@example.com"]
    assert row["event_props__leave_date"] == datetime(2025, 6, 11, 19, 40)
    assert frame.columns[:5] == ["_record_id", "event_name", "ts", "event_time", "event_time_utc"]


def test_event_time_is_local_and_utc_is_derived():
    row = normalise_page([RECORD], options()).frame.row(0, named=True)
    assert row["ts"] == 20250607130935
    assert row["event_time"] == datetime(2025, 6, 7, 13, 9, 35)
    assert row["event_time_utc"] == datetime(2025, 6, 7, 7, 39, 35, tzinfo=UTC)


def test_epoch_seconds_and_milliseconds_become_local_times():
    records = [{**RECORD, "ts": 1749301775}, {**RECORD, "ts": 1749301775000}]
    frame = normalise_page(records, options()).frame
    assert frame["event_time"].to_list() == [datetime(2025, 6, 7, 18, 39, 35)] * 2


def test_drifting_types_widen_within_a_page():
    records = [RECORD, {**RECORD, "event_props": {"Fare": "free"}}]
    frame = normalise_page(records, options()).frame
    assert frame.schema["event_props__fare"] == pl.String
    assert frame["event_props__fare"].to_list() == ["5149", "free"]


def test_bool_beside_number_is_text_and_keeps_both():
    records = [RECORD, {**RECORD, "event_props": {"Fare": True}}]
    frame = normalise_page(records, options()).frame
    assert frame["event_props__fare"].to_list() == ["5149", "true"]
    assert frame["profile__object_id"].to_list() == ["__068b9a97"] * 2


def test_object_beside_scalar_keeps_both():
    records = [RECORD, {**RECORD, "event_props": {"Fare": {"amount": 12}}}]
    frame = normalise_page(records, options()).frame
    assert frame["event_props__fare"].to_list() == [5149, None]
    assert frame["event_props__fare__amount"].to_list() == [None, 12]


def test_record_id_ignores_key_order_at_every_level():
    shuffled = {
        "event_props": dict(reversed(RECORD["event_props"].items())),
        "ts": RECORD["ts"],
        "session_props": RECORD["session_props"],
        "profile": {**dict(reversed(RECORD["profile"].items()))},
    }
    other = {**RECORD, "event_props": {**RECORD["event_props"], "Fare": 5150}}
    ids = normalise_page([RECORD, shuffled, other], options()).frame["_record_id"].to_list()
    assert ids[0] == ids[1] != ids[2]


def test_ints_beside_floats_are_floats_and_other_mixes_text():
    records = [
        {**RECORD, "event_props": {"Fare": 5149, "Big": 2**64 - 1, "Tags": ["a"], "Flag": True}},
        {**RECORD, "event_props": {"Fare": 51.5, "Big": 1, "Tags": "none", "Flag": False}},
    ]
    frame = normalise_page(records, options()).frame
    assert frame["event_props__fare"].to_list() == [5149.0, 51.5]
    assert frame["event_props__big"].to_list() == [str(2**64 - 1), "1"]
    assert frame["event_props__tags"].to_list() == ['["a"]', "none"]
    assert frame["event_props__flag"].to_list() == [True, False]


def test_a_page_without_any_ts_counts_every_record_invalid():
    page = normalise_page([{"event_props": {"Fare": 1}}], options())
    assert (page.frame.height, page.counts.invalid_ts) == (0, 1)


def test_keys_alike_in_snake_case_keep_their_own_values_and_columns():
    """Never a coalesce: each key its column, the same in every page and for a later run."""
    colliding = {"CT Source": "Mobile", "ct_source": "Web", "ct-source": "API"}
    names = ColumnNames()
    first = normalise_page([{**RECORD, "event_props": colliding}], options(), names)
    columns = {c: first.frame[c][0] for c in first.frame.columns if "ct_source" in c}
    digest = {k: hashlib.sha256(f"event_props\x1f{k}".encode()).hexdigest()[:8] for k in colliding}
    assert columns == {
        "event_props__ct_source": "Mobile",
        f"event_props__ct_source_{digest['ct_source']}": "Web",
        f"event_props__ct_source_{digest['ct-source']}": "API",
    }
    record = names.record()
    assert record["event_props__ct_source"] == ["event_props", "CT Source"]
    # A later page (or run, from the recorded names) with a bool beside a number (text)
    # holds only the lower-case key: it keeps its own column.
    later = {**RECORD, "event_props": {"ct_source": "Web", "flag": True}}
    other = {**RECORD, "ts": 20250607130936, "event_props": {"ct_source": 3, "flag": 1}}
    page = normalise_page([later, other], options(), ColumnNames(record))
    assert page.frame[f"event_props__ct_source_{digest['ct_source']}"].to_list() == ["Web", "3"]
    assert "event_props__ct_source" not in page.frame.columns


def test_json_mode_keeps_sections_as_received():
    page = normalise_page(
        [RECORD, {"ts": 20250607000000, "profile": {"objectId": "b"}}], options(auto_mapping=False)
    )
    assert page.frame.columns[5:] == ["profile", "event_props", "session_props"]
    assert orjson.loads(page.frame["event_props"][0]) == RECORD["event_props"]
    assert page.frame["session_props"][1] is None
    assert page.json_columns == {"profile", "event_props", "session_props"}


def test_size_limits_and_bad_timestamps_skip_only_the_offending_records():
    big = {**RECORD, "event_props": {"blob": "x" * 5_000}}
    no_ts = {**RECORD, "ts": "soon"}
    page = normalise_page([RECORD, big, no_ts], options(max_record_bytes=4_000))
    assert (page.frame.height, page.counts.oversize_records, page.counts.invalid_ts) == (1, 1, 1)
    page = normalise_page([RECORD, big], options(max_row_bytes=2_000))
    assert (page.frame.height, page.counts.oversize_rows, page.counts.oversize_records) == (1, 1, 0)


KNOWN_IDS = [
    "685b1f9e9d5644fc1bf48c48c51f7decd4dbf039af2930bb108a2abf997f8d30",
    "3837c347c0d2da3da7d8d93de57b37566722a3f93fa64fdef4799ac314ae4372",
]
"""The ids of `known_records()` as tables already hold them: they must never move."""


def known_records() -> list[dict]:
    numbers = {"Price": 12.5, "Ratio": 1e-7, "Big": 18446744073709551615, "Neg": -3}
    return [RECORD, {**RECORD, "event_props": {**RECORD["event_props"], **numbers}}]


def ids_of(raw: bytes) -> list[str]:
    return normalise_page(load_records(raw), options()).frame["_record_id"].to_list()


def test_ids_of_records_without_wide_numbers_stay_as_they_are_on_either_path():
    """A page with a 20-digit number anywhere is read on the exact path: the ids of its other
    records are those orjson's path gives, which existing tables hold."""
    page = orjson.dumps(known_records())
    assert ids_of(page) == KNOWN_IDS
    wide = page[:-1] + b',{"ts":20250607130935,"event_props":{"OrderId":123456789012345678901}}]'
    assert ids_of(wide)[:2] == KNOWN_IDS


def test_records_differing_only_in_a_wide_integer_stay_distinct_with_exact_digits():
    """Integers past 64 bits and `1e400` keep their text, in the id and in a text column."""
    raw = (
        b'[{"ts":20250607130935,"event_props":{"OrderId":123456789012345678901234567890,'
        b'"Huge":1e400}},'
        b'{"ts":20250607130935,"event_props":{"OrderId":123456789012345678901234567891,'
        b'"Huge":1e400}}]'
    )
    frame = normalise_page(load_records(raw), options()).frame
    assert frame["_record_id"].n_unique() == 2
    assert frame["event_props__order_id"].to_list() == [
        "123456789012345678901234567890",
        "123456789012345678901234567891",
    ]
    assert frame["event_props__huge"].to_list() == ["1e400", "1e400"]
    canonical = b'{"event_props":{"Huge":1e400,"OrderId":123456789012345678901234567890},'
    assert frame["_record_id"][0] == hashlib.sha256(canonical + b'"ts":20250607130935}').hexdigest()


def test_top_level_keys_named_like_system_columns_keep_their_values_in_columns_of_their_own():
    record = {
        "ts": 20250607130935,
        "event_name": "theirs",
        "event_time": "t",
        "event_time_utc": "u",
        "_record_id": "r",
    }
    row = normalise_page([record], options()).frame.row(0, named=True)
    assert row["event_name"] == "Flight Booked"
    assert row["event_time"] == datetime(2025, 6, 7, 13, 9, 35)
    assert (
        row["_record_id"]
        == hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest()
    )
    assert row["record_id"] == "r"
    hashed = {k: v for k, v in row.items() if k[-9:-8] == "_" and k[:-9] in SYSTEM_COLUMNS}
    assert sorted(hashed.values()) == [
        "t",
        "theirs",
        "u",
    ]


def test_a_float_ts_is_read_also_where_its_column_is_text():
    """A float `ts` beside an unreadable one (its column is text then) keeps its record."""
    page = normalise_page([{"ts": 20250607130935.0}, {"ts": "soon"}], options())
    assert page.frame.select("ts", "event_time").rows() == [
        (20250607130935, datetime(2025, 6, 7, 13, 9, 35))
    ]
    assert page.counts.invalid_ts == 1
