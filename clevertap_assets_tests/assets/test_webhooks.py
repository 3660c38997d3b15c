"""The real-time path end to end: posts through the real receiver, `webhook_inbox_sensor`,
`webhook_events` runs into DuckDB; each acknowledged payload lands exactly once, whatever
fails in between."""

import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import duckdb
import orjson
import pytest
from dagster import (
    DagsterInstance,
    Definitions,
    IOManager,
    SensorResult,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.assets.webhooks import (
    WebhookInboxResource,
    parse_range_key,
)
from clevertap_assets.automation.sensors import webhook_result
from clevertap_assets.definitions import build_webhook_definitions
from clevertap_assets.destinations.duckdb.io_manager import DuckDBEventIOManager
from clevertap_assets.destinations.duckdb.stats import DuckDBEventStats
from clevertap_assets.webhooks.inbox import WebhookInbox
from clevertap_assets.webhooks.receiver import MAX_BODY_BYTES, WebhookAuth
from clevertap_assets_tests.daemon import apply_partition_requests
from clevertap_assets_tests.harness import make_pipeline
from clevertap_assets_tests.webhook_server import (
    PASSWORD,
    USER,
    basic_auth,
    post_webhook,
    serving,
)


class CommitThenCrash(DuckDBEventIOManager):
    """The worst moment to die: the range's rows are committed, the run is still marked failed."""

    def create_io_manager(self, context) -> IOManager:
        loader = super().create_io_manager(context)

        class _Crashing(IOManager):
            def handle_output(self, context, obj) -> None:
                loader.handle_output(context, obj)
                raise RuntimeError("worker killed after the warehouse commit")

            def load_input(self, context) -> object:
                return loader.load_input(context)

        return _Crashing()


def payload(n: int, profiles: int) -> dict:
    return {
        "targetId": 1000 + n,
        "key_values": {"campaign": f"c{n}"},
        "profiles": [
            {"Identity": f"u{n}-{i}", "profileData": {"plan": "gold"}, "event_properties": {"n": n}}
            for i in range(profiles)
        ],
    }


@contextmanager
def pipeline_with_inbox(tmp_path, emulator, **settings):
    pipeline = make_pipeline(tmp_path, emulator, **settings)
    warehouse = DuckDBEventIOManager(database=pipeline.duckdb_path)
    definitions = Definitions.merge(
        build_webhook_definitions(pipeline_facts(pipeline.settings), tmp_path / "inbox.sqlite3"),
        Definitions(
            resources={
                "warehouse_io_manager": warehouse,
                "warehouse_stats": DuckDBEventStats(database=pipeline.duckdb_path),
            }
        ),
    )
    with instance_for_test() as instance:
        yield pipeline, definitions, instance


def evaluate(definitions, instance: DagsterInstance) -> SensorResult:
    resources = {"webhook_inbox": definitions.resources["webhook_inbox"]}
    with build_sensor_context(instance=instance, resources=resources) as context:
        result = definitions.resolve_sensor_def("webhook_inbox_sensor")(context)
    apply_partition_requests(instance, result)
    return result


def load(pipeline, definitions, instance, result: SensorResult, io_manager=DuckDBEventIOManager):
    """Run every requested range as the daemon would; True when all succeeded."""
    warehouse = io_manager(database=pipeline.duckdb_path)
    outcomes = [
        materialize(
            definitions.assets,
            partition_key=request.partition_key,
            instance=instance,
            resources={**definitions.resources, "warehouse_io_manager": warehouse},
            raise_on_error=False,
        ).success
        for request in result.run_requests or []
    ]
    return all(outcomes)


def rows(pipeline, sql: str) -> list[tuple]:
    with duckdb.connect(pipeline.duckdb_path, read_only=True) as connection:
        return connection.execute(sql).fetchall()


def test_every_acknowledged_payload_lands_once_despite_crashes_and_restarts(tmp_path, emulator):
    with pipeline_with_inbox(tmp_path, emulator, table_prefix="ct") as (pipe, defs, instance):
        inbox = WebhookInbox(defs.resources["webhook_inbox"].path)
        auth = WebhookAuth(basic_user=USER, basic_password=PASSWORD)
        good = basic_auth(USER, PASSWORD)
        with serving(inbox, auth) as url, ThreadPoolExecutor(8) as pool:
            bodies = [orjson.dumps(payload(n, 1 + n % 3)) for n in range(24)]
            answers = list(pool.map(lambda body: post_webhook(url, body, good), bodies))
            assert {a.status_code for a in answers} == {200}
            assert post_webhook(url, bodies[0], basic_auth(USER, "wrong")).status_code == 401
            assert post_webhook(url, b"{not json", good).status_code == 400
            assert post_webhook(url, b" " * (MAX_BODY_BYTES + 1), good).status_code == 413
            assert post_webhook(url, orjson.dumps({"is_test": True}), good).status_code == 200

            first = evaluate(defs, instance)
            assert [r.partition_key for r in first.run_requests] == ["000000000001-000000000025"]
            assert not load(pipe, defs, instance, first, io_manager=CommitThenCrash)
            assert rows(pipe, 'SELECT count(*) FROM "clevertap"."ct_webhook_events"') == [(48,)]

            late = orjson.dumps(payload(99, 2))
            assert post_webhook(url, late, good).status_code == 200
        retry = evaluate(defs, instance)
        assert [r.partition_key for r in retry.run_requests] == [
            "000000000001-000000000025",
            "000000000026-000000000026",
        ]
        assert load(pipe, defs, instance, retry)

        ids = [answer.json()["id"] for answer in answers]
        expected = {(ids[n], i) for n in range(24) for i in range(1 + n % 3)} | {(26, 0), (26, 1)}
        loaded = rows(pipe, 'SELECT inbox_id, profile_index FROM "clevertap"."ct_webhook_events"')
        assert sorted(loaded) == sorted(expected)
        assert not evaluate(defs, instance).run_requests
        restarted = evaluate(
            defs, instance
        )  # a new context, no cursor: the state is the instance's
        assert not restarted.run_requests and restarted.skip_reason

        assert load(pipe, defs, instance, retry)  # a range loaded again replaces itself
        assert len(rows(pipe, 'SELECT _record_id FROM "clevertap"."ct_webhook_events"')) == len(
            expected
        )
        (columns,) = rows(
            pipe,
            "SELECT profile__identity, profile__profile_data__plan, event_props__n, target_id, "
            'key_values__campaign FROM "clevertap"."ct_webhook_events" WHERE inbox_id = 26 '
            "AND profile_index = 1",
        )
        assert columns == ("u99-1", "gold", 99, "1099", "c99")


def test_json_mode_keeps_the_sections_as_json(tmp_path, emulator):
    with pipeline_with_inbox(tmp_path, emulator, auto_mapping=False) as (pipe, defs, instance):
        WebhookInbox(defs.resources["webhook_inbox"].path).append(orjson.dumps(payload(7, 2)))
        assert load(pipe, defs, instance, evaluate(defs, instance))
        types = dict(
            rows(
                pipe,
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'webhook_events'",
            )
        )
        assert {name: types[name] for name in ("profile", "event_props", "key_values")} == {
            "profile": "JSON",
            "event_props": "JSON",
            "key_values": "JSON",
        }
        (profile,) = rows(pipe, 'SELECT profile FROM "clevertap"."webhook_events" LIMIT 1')[0]
        assert orjson.loads(profile)["profileData"] == {"plan": "gold"}


def test_profile_keys_named_like_the_loaders_keep_their_values_beside_its_own(tmp_path, emulator):
    """A profile holding `_inbox_id`, `_target_id`, `_key_values` and `_profile_index`: the
    loader's columns hold the delivery's context, the profile's columns the profile's values."""
    own = {"_inbox_id": 99, "_target_id": "t", "_key_values": "k", "_profile_index": 98}
    body = {"targetId": 5, "key_values": {"campaign": "c"}, "profiles": [{"Identity": "u", **own}]}
    with pipeline_with_inbox(tmp_path, emulator) as (pipe, defs, instance):
        WebhookInbox(defs.resources["webhook_inbox"].path).append(orjson.dumps(body))
        assert load(pipe, defs, instance, evaluate(defs, instance))
        (loaded,) = rows(
            pipe,
            "SELECT inbox_id, profile_index, target_id, key_values__campaign, profile__inbox_id, "
            "profile__target_id, profile__key_values, profile__profile_index "
            'FROM "clevertap"."webhook_events"',
        )
        assert loaded == (1, 0, "5", "c", 99, "t", "k", 98)


def test_the_inbox_resource_points_at_the_receivers_file(tmp_path, emulator):
    with pipeline_with_inbox(tmp_path, emulator) as (_, defs, _instance):
        resource = defs.resources["webhook_inbox"]
        assert isinstance(resource, WebhookInboxResource)
        assert resource.path == str((tmp_path / "inbox.sqlite3").resolve())


def test_a_redelivered_payload_is_loaded_once_within_the_window(tmp_path, emulator):
    """CleverTap re-sends a payload whose 200 it missed: the same bytes, stored twice. The
    copy within 24 h is left out (in its own range too); the same body days later is new."""
    with pipeline_with_inbox(tmp_path, emulator) as (pipe, defs, instance):
        inbox = WebhookInbox(defs.resources["webhook_inbox"].path)
        auth = WebhookAuth(basic_user=USER, basic_password=PASSWORD)
        body, other = orjson.dumps(payload(1, 2)), orjson.dumps(payload(2, 1))
        with serving(inbox, auth) as url:
            for sent in (body, other, body):
                assert post_webhook(url, sent, basic_auth(USER, PASSWORD)).status_code == 200
            assert load(pipe, defs, instance, evaluate(defs, instance))
            assert post_webhook(url, body, basic_auth(USER, PASSWORD)).status_code == 200
        later = datetime.now(UTC) + pipe.settings.redelivery_window + timedelta(minutes=1)
        inbox.append(body, later)
        assert load(pipe, defs, instance, evaluate(defs, instance))
        loaded = rows(
            pipe,
            'SELECT inbox_id, count(*) FROM "clevertap"."webhook_events" GROUP BY 1 ORDER BY 1',
        )
        assert loaded == [(1, 2), (2, 1), (5, 2)]
        latest = instance.get_latest_materialization_event(defs.assets[0].key)
        assert latest.asset_materialization.metadata["redeliveries_dropped"].value == 1


def test_with_no_redelivery_window_equal_bodies_are_distinct_deliveries(tmp_path, emulator):
    """The trade-off's other side: WEBHOOK_REDELIVERY_MINUTES=0 loads every delivery, also
    two equal bodies a second apart (and CleverTap's own re-sends)."""
    with pipeline_with_inbox(tmp_path, emulator, webhook_redelivery_minutes=0) as (
        pipe,
        defs,
        instance,
    ):
        inbox = WebhookInbox(defs.resources["webhook_inbox"].path)
        body = orjson.dumps(payload(1, 2))
        now = datetime.now(UTC)
        inbox.append(body, now)
        inbox.append(body, now)
        assert load(pipe, defs, instance, evaluate(defs, instance))
        loaded = rows(
            pipe,
            'SELECT inbox_id, count(*) FROM "clevertap"."webhook_events" GROUP BY 1 ORDER BY 1',
        )
        assert loaded == [(1, 2), (2, 2)]


def test_a_range_that_keeps_failing_is_retried_with_a_growing_backoff(tmp_path, emulator):
    with pipeline_with_inbox(tmp_path, emulator) as (pipe, defs, instance):
        inbox = WebhookInbox(defs.resources["webhook_inbox"].path)
        inbox.append(orjson.dumps(payload(1, 1)))
        (asset,) = defs.assets
        first = evaluate(defs, instance)
        (key,) = [r.partition_key for r in first.run_requests]
        assert not load(pipe, defs, instance, first, io_manager=CommitThenCrash)
        retry = webhook_result(instance, asset, inbox)  # first failure: at once
        assert [r.partition_key for r in retry.run_requests] == [key]
        assert not load(pipe, defs, instance, retry, io_manager=CommitThenCrash)

        failed_at = time.time()
        held = webhook_result(instance, asset, inbox, now=failed_at + 50)
        assert not held.run_requests
        assert "1 failed range(s) wait for their retry" in held.skip_reason.skip_message
        later = webhook_result(instance, asset, inbox, now=failed_at + 61)
        assert [r.partition_key for r in later.run_requests] == [key]
        assert load(pipe, defs, instance, later)
        assert rows(pipe, 'SELECT count(*) FROM "clevertap"."webhook_events"') == [(1,)]


class WarehouseDown(DuckDBEventIOManager):
    """A warehouse that refuses every load before anything is written."""

    def create_io_manager(self, context) -> IOManager:
        class _Down(IOManager):
            def handle_output(self, context, obj) -> None:
                obj.discard()
                raise ConnectionError("warehouse unreachable")

            def load_input(self, context) -> object:
                raise ConnectionError("warehouse unreachable")

        return _Down()


@pytest.mark.slow
def test_partitions_stay_bounded_and_every_payload_lands_once(tmp_path, emulator):
    """Ticks as the daemon runs them, a payload arriving before each: loaded ranges but the
    newest `kept` are deleted as partitions; while the warehouse is down at most `max_open`
    ranges are opened and later payloads wait in the inbox; once it is back, every payload is
    in the table once, retired ranges' rows included, and the partitions are still bounded."""
    with pipeline_with_inbox(tmp_path, emulator) as (pipe, defs, instance):
        inbox = WebhookInbox(defs.resources["webhook_inbox"].path)
        (asset,) = defs.assets
        name = asset.partitions_def.name

        def tick(warehouse=DuckDBEventIOManager, now=None) -> SensorResult:
            result = webhook_result(instance, asset, inbox, now, kept=2, max_open=3)
            apply_partition_requests(instance, result)
            load(pipe, defs, instance, result, io_manager=warehouse)
            return result

        opened = []
        for n in range(6):
            inbox.append(orjson.dumps(payload(n, 2)))
            opened += [r.partition_key for r in tick().run_requests]
        assert len(opened) == 6
        # the 2 newest loaded ranges (kept) and this tick's new one
        assert sorted(instance.get_dynamic_partitions(name)) == opened[-3:]
        assert instance.get_materialized_partitions(asset.key) >= set(opened)

        for n in range(6, 12):
            inbox.append(orjson.dumps(payload(n, 2)))
            down = tick(WarehouseDown)
        ranges = sorted(instance.get_dynamic_partitions(name))
        unloaded = [r for r in ranges if r not in instance.get_materialized_partitions(asset.key)]
        assert len(unloaded) == 3
        assert parse_range_key(ranges[-1])[1] < inbox.last_id()  # the rest waits in the inbox
        for _ in range(4):  # until each has failed twice and waits for its backoff
            if not down.run_requests:
                break
            down = tick(WarehouseDown)
        assert not down.run_requests
        assert down.skip_reason.skip_message == (
            f"3 range(s) are not loaded yet; entries after id {parse_range_key(ranges[-1])[1]} "
            "wait in the inbox until one is"
        )

        later = time.time() + 7200  # past every backoff
        while tick(now=later).run_requests:
            assert len(instance.get_dynamic_partitions(name)) <= 2 + 3
        loaded = rows(
            pipe,
            'SELECT inbox_id, count(*) FROM "clevertap"."webhook_events" GROUP BY 1 ORDER BY 1',
        )
        assert loaded == [(n, 2) for n in range(1, 13)]
        assert len(instance.get_dynamic_partitions(name)) == 2
