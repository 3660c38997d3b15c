"""The production topology of `deploy/`, run for real: PostgreSQL, a code server and a webhook
receiver per pipeline, the webserver and the daemon as separate processes, two CleverTap
accounts played by two emulators. What a user launches goes through the webserver's GraphQL
API, what the daemon does is read back from the instance's PostgreSQL tables."""

import json
import os
import re
import subprocess
from datetime import date, timedelta
from uuid import uuid4

import httpx
import psycopg
import pytest

from clevertap_assets.days import local_today
from clevertap_assets.emulator import InFlightGate, peak_in_flight
from clevertap_assets_tests.deployment import (
    Deployment,
    compose_health_checks,
    container_disk,
    free_port,
    image_health_check,
    instance_env,
    readme_block,
    run_deployment,
)
from clevertap_assets_tests.harness import write_events_csv
from clevertap_assets_tests.postgres_server import (  # noqa: F401
    PostgresServer,
    find_binaries,
    postgres_server,
)

TIMEZONE = "Asia/Kolkata"
BACKFILL_TAG = "dagster/backfill"
SENSOR_TAG = "dagster/sensor_name"
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
  }
}
"""
STEP_LOGS = """
query StepLogs($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection { events { __typename ... on LogsCapturedEvent { fileKey stepKeys } } }
  }
}
"""
CAPTURED_LOGS = """
query CapturedLogs($runId: ID!, $fileKey: String!) {
  runOrError(runId: $runId) { ... on Run { capturedLogs(fileKey: $fileKey) { stdout stderr } } }
}
"""
# Schedules tick once a day at local midnight and nothing is loaded before the tests
# request it, so the daemon runs only what a test asks for.
QUIET = {"INGESTION_FREQUENCY": "24h", "CLEVERTAP_HISTORY_DAYS": "7"}
# Seven processes, each run and step another one: slow on a busy 2-core machine.
pytestmark = [pytest.mark.timeout(600), pytest.mark.topology]


def launch_backfill(deployment: Deployment, asset_keys: list[list[str]], days: list[date]) -> str:
    """What the UI's "Materialize" of a partition range sends."""
    params = {
        "assetSelection": [{"path": key} for key in asset_keys],
        "partitionNames": [day.isoformat() for day in days],
    }
    answer = deployment.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert answer["__typename"] == "LaunchBackfillSuccess", answer
    return answer["backfillId"]


def run_readme_graphql_example(deployment: Deployment, timezone: str) -> tuple[dict, str]:
    """The README's backfill example, verbatim, with the variables its by-hand steps export
    and the webserver's address: GraphQL's answer, and what psql printed."""
    env = {
        **os.environ,
        **instance_env(deployment.postgres, deployment.database),
        "DAGSTER_WEBSERVER_URL": deployment.webserver_url,
        "TZ": timezone,
        "PATH": os.pathsep.join([str(find_binaries()), os.environ["PATH"]]),
    }
    ran = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_block("launchPartitionBackfill")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    answer, printed = ran.stdout.split("\n", 1)
    return json.loads(answer), printed


def step_logs(deployment: Deployment, run_id: str) -> tuple[list[str], dict[str, str]]:
    """A run's captured steps and their stdout and stderr, as the UI reads them through the
    webserver."""
    events = deployment.graphql(STEP_LOGS, {"runId": run_id})["logsForRun"]["events"]
    (captured,) = [e for e in events if e["__typename"] == "LogsCapturedEvent"]
    variables = {"runId": run_id, "fileKey": captured["fileKey"]}
    logs = deployment.graphql(CAPTURED_LOGS, variables)["runOrError"]["capturedLogs"]
    return captured["stepKeys"], logs


def retarget(argv: list[str], shipped_port: str, port: object) -> list[str]:
    """A shipped command pointed at the port this test's process listens on."""
    return [arg.replace(shipped_port, str(port)) for arg in argv]


def shipped_health_checks(deployment: Deployment) -> dict[str, int]:
    """The exit status of each shipped health check, run against the live processes: the
    image's against a code server, Compose's against a receiver, the webserver and the
    daemon; and the image's against a port nothing serves, which must fail."""
    pipeline = deployment.pipelines["pipeline_b"]
    compose = compose_health_checks()
    daemon_env = {**deployment.workspace_env, **container_disk(deployment.root, "daemon")}
    checks = {
        "pipeline_b": (retarget(image_health_check(), "4000", pipeline.code_port), pipeline.env),
        "webhooks_b": (
            retarget(compose["webhooks_b"], "8800", pipeline.webhook_url.rsplit(":", 1)[1]),
            pipeline.env,
        ),
        "webserver": (
            retarget(compose["webserver"], "3000", deployment.webserver_url.rsplit(":", 1)[1]),
            deployment.workspace_env,
        ),
        "daemon": (compose["daemon"], daemon_env),
        "nothing": (retarget(image_health_check(), "4000", free_port()), pipeline.env),
    }
    return {name: deployment.health_check(argv, env) for name, (argv, env) in checks.items()}


def redshift_warehouse(postgres: PostgresServer) -> dict[str, str]:
    """The warehouse both pipelines load: a database that behaves as a provisioned Redshift
    cluster where PostgreSQL can, reached as a user configures Redshift. A server warehouse,
    as in production: runs in parallel processes write it at once."""
    return {
        "DESTINATION": "redshift",
        "REDSHIFT_HOST": postgres.host,
        "REDSHIFT_PORT": str(postgres.port),
        "REDSHIFT_DATABASE": postgres.create_redshift_database(f"w_{uuid4().hex[:12]}"),
        "REDSHIFT_USER": postgres.user,
        "REDSHIFT_PASSWORD": postgres.password,
        "REDSHIFT_SSLMODE": "disable",
    }


def warehouse_rows(postgres: PostgresServer, warehouse: dict[str, str], sql: str) -> list[tuple]:
    with psycopg.connect(postgres.conninfo(warehouse["REDSHIFT_DATABASE"])) as connection:
        return connection.execute(sql).fetchall()


def rows_per_day(postgres: PostgresServer, warehouse: dict[str, str], table: str) -> dict:
    sql = f"SELECT CAST(event_time AS DATE), count(*) FROM {table} GROUP BY 1"
    return dict(warehouse_rows(postgres, warehouse, sql))


def test_a_graphql_backfill_and_a_webhook_load_exactly_through_the_daemon(
    tmp_path,
    postgres_server: PostgresServer,  # noqa: F811
    make_emulator,
):
    """The README's production topology: a partition backfill of one event over three days,
    launched through GraphQL by the README's own example, is run by the daemon as one run and
    loads the emulator's truth, and its step's logs are read through the webserver, whose
    disk shares only the compute log volume with the code servers; a webhook posted to a
    receiver is loaded by a run of `webhook_inbox_sensor`; both runs are recorded in
    PostgreSQL; the shipped health checks pass against the live processes."""
    app = make_emulator(account_id="APP-ACCOUNT", passcode="app-passcode", timezone=TIMEZONE)
    web = make_emulator(account_id="WEB-ACCOUNT", passcode="web-passcode", timezone=TIMEZONE)
    app_events = write_events_csv(tmp_path / "app.csv", ["Charged", "App Launched"])
    web_events = write_events_csv(tmp_path / "web.csv", ["Charged"])
    warehouse = redshift_warehouse(postgres_server)
    settings = {**QUIET, **warehouse}
    pipelines = {
        "pipeline_a": (
            app,
            {**settings, "CLEVERTAP_PIPELINE_NAME": "app", "CLEVERTAP_EVENTS_CSV": str(app_events)},
        ),
        "pipeline_b": (
            web,
            {**settings, "CLEVERTAP_PIPELINE_NAME": "web", "CLEVERTAP_EVENTS_CSV": str(web_events)},
        ),
    }
    yesterday = local_today(TIMEZONE) - timedelta(days=1)
    days = [yesterday - timedelta(days=n) for n in (2, 1, 0)]
    with run_deployment(tmp_path / "deployment", postgres_server, pipelines) as deployment:
        receiver = deployment.pipelines["pipeline_b"]
        payload = {
            "targetId": 1472124953,
            "profiles": [
                {"Identity": "u-1", "event_properties": {"plan": "gold"}},
                {"identity": "u-2", "event_properties": {"plan": "silver"}},
            ],
        }
        answer = httpx.post(
            f"{receiver.webhook_url}/webhooks/clevertap",
            json=payload,
            headers={"X-Webhook-Secret": receiver.webhook_secret},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        answer, printed = run_readme_graphql_example(deployment, TIMEZONE)
        launched = answer["data"]["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", answer
        assert printed.split("\n")[0].split() == ["run_id", "|", "status", "|", "create_timestamp"]
        backfill = launched["backfillId"]
        deployment.start_daemon()

        backfill_runs = deployment.wait_for_runs(BACKFILL_TAG, backfill)
        webhook_runs = deployment.wait_for_runs(SENSOR_TAG, "webhook_inbox_sensor")

        assert list(backfill_runs.values()) == ["SUCCESS"], deployment.logs()
        assert list(webhook_runs.values()) == ["SUCCESS"], deployment.logs()
        healthy = dict.fromkeys(("pipeline_b", "webhooks_b", "webserver", "daemon"), 0)
        checked = shipped_health_checks(deployment)
        assert checked.pop("nothing") != 0
        assert checked == healthy, deployment.logs()
        (run_id,) = backfill_runs
        tags = dict(deployment.query("SELECT key, value FROM run_tags WHERE run_id = %s", run_id))
        assert (
            tags["dagster/asset_partition_range_start"],
            tags["dagster/asset_partition_range_end"],
        ) == (
            days[0].isoformat(),
            days[-1].isoformat(),
        )
        assert rows_per_day(postgres_server, warehouse, "app.charged") == {
            d: app.true_count("Charged", d) for d in days
        }
        steps, logs = step_logs(deployment, run_id)
        assert "app_events" in steps, steps  # the reader, beside the freshness checks' step
        # None where the webserver cannot read the logs the run's code server wrote.
        stderr = logs["stderr"] or ""
        assert re.search(f"{run_id} - \\d+ - app_events - STEP_SUCCESS - ", stderr), logs
        loaded = warehouse_rows(
            postgres_server,
            warehouse,
            "SELECT profile__identity, event_props__plan FROM web.webhook_events ORDER BY 1",
        )
        assert loaded == [("u-1", "gold"), ("u-2", "silver")]


EXPORTED = ["App Launched", "Product Viewed", "Added To Cart", "Charged"]


def test_two_accounts_export_three_at_once_each_and_never_more(
    tmp_path,
    postgres_server: PostgresServer,  # noqa: F811
    make_emulator,
):
    """Two pipelines of two CleverTap accounts on one instance, four events each launched at
    once: each account's pool lets 3 exports run (CleverTap's limit per account) and holds the
    fourth, and the two accounts export side by side, 3 + 3, instead of sharing 3 slots. The
    emulators hold export requests until 6 are in flight at once across both accounts (or 50
    seconds pass), so the overlap is proven however slowly a loaded machine starts the runs."""
    gate = InFlightGate(count=6, timeout_seconds=50)  # under the client's 60 s read timeout
    accounts = {"timezone": TIMEZONE, "records_per_day": 20, "gate": gate}
    app = make_emulator(account_id="APP-ACCOUNT", passcode="app-passcode", **accounts)
    web = make_emulator(account_id="WEB-ACCOUNT", passcode="web-passcode", **accounts)
    events = write_events_csv(tmp_path / "events.csv", EXPORTED)
    warehouse = redshift_warehouse(postgres_server)
    settings = {**QUIET, **warehouse, "CLEVERTAP_EVENTS_CSV": str(events)}
    pipelines = {
        "pipeline_a": (app, {**settings, "CLEVERTAP_PIPELINE_NAME": "app"}),
        "pipeline_b": (web, {**settings, "CLEVERTAP_PIPELINE_NAME": "web"}),
    }
    day = local_today(TIMEZONE) - timedelta(days=1)
    slugs = ["app_launched", "product_viewed", "added_to_cart", "charged"]
    with run_deployment(tmp_path / "deployment", postgres_server, pipelines) as deployment:
        backfills = {
            name: launch_backfill(deployment, [[name, slug] for slug in slugs], [day])
            for name in ("app", "web")
        }
        deployment.start_daemon()
        runs = {name: deployment.wait_for_runs(BACKFILL_TAG, b) for name, b in backfills.items()}

        assert [list(r.values()) for r in runs.values()] == [["SUCCESS"], ["SUCCESS"]], (
            deployment.logs()
        )
        assert (app.stats.max_in_flight, web.stats.max_in_flight) == (3, 3)
        assert (app.stats.rate_limited, web.stats.rate_limited) == (0, 0)
        assert peak_in_flight(app.stats, web.stats) == 6, deployment.logs()
        for emulator, pipeline_settings in pipelines.values():
            name = pipeline_settings["CLEVERTAP_PIPELINE_NAME"]
            for event, slug in zip(EXPORTED, slugs, strict=True):
                table = f"{name}.{slug}"
                expected = {day: emulator.true_count(event, day)}
                assert rows_per_day(postgres_server, warehouse, table) == expected, table


def test_a_crashed_code_server_leaves_no_run_holding_its_account_and_no_live_run_is_judged(
    tmp_path,
    postgres_server: PostgresServer,  # noqa: F811
    make_emulator,
):
    """Two pipelines' code servers in PID namespaces of their own (as Compose containers),
    each account read by one run at once. Both runs are live while both code servers'
    sensors look at runs in progress, and neither is judged dead. Then `kill -9` of the first
    code server, its run worker with it: nothing reports that run's end, its heartbeat goes
    silent, and the other code server's sensor fails it. The second run loads exactly
    throughout; the first pipeline, back, loads its days exactly in the next run, which the
    run queue does not hold behind the dead one."""
    silence = {"CLEVERTAP_RUN_SILENCE_SECONDS": "8"}
    app = make_emulator(account_id="APP-ACCOUNT", passcode="app-passcode", timezone=TIMEZONE)
    app.set_faults(page_in_progress=True, page_in_progress_polls=None)  # pages never come
    web = make_emulator(
        account_id="WEB-ACCOUNT", passcode="web-passcode", timezone=TIMEZONE, delay_seconds=15
    )  # each request takes 15 s: the run stays live past the sensors' interval (30 s)
    events = write_events_csv(tmp_path / "events.csv", ["Charged", "App Launched"])
    warehouse = redshift_warehouse(postgres_server)
    settings = {**QUIET, **warehouse, **silence, "CLEVERTAP_EVENTS_CSV": str(events)}
    pipelines = {
        "pipeline_a": (app, {**settings, "CLEVERTAP_PIPELINE_NAME": "app"}),
        "pipeline_b": (web, {**settings, "CLEVERTAP_PIPELINE_NAME": "web"}),
    }
    yesterday = local_today(TIMEZONE) - timedelta(days=1)
    days = [yesterday - timedelta(days=1), yesterday]
    keys = {name: [[name, "charged"], [name, "app_launched"]] for name in ("app", "web")}
    with run_deployment(tmp_path / "deployment", postgres_server, pipelines) as deployment:
        first = launch_backfill(deployment, keys["app"], days)
        other = launch_backfill(deployment, keys["web"], days)
        deployment.start_daemon()

        def started(backfill: str) -> str | None:
            runs = deployment.runs_tagged(BACKFILL_TAG, backfill)
            return next((r for r, status in runs.items() if status == "STARTED"), None)

        dead = deployment.wait_for("the first run to read", lambda: started(first))
        live = deployment.wait_for("the second run to read", lambda: started(other))
        evaluated = deployment.query("SELECT count(*) FROM job_ticks")[0][0]
        deployment.wait_for(
            "both code servers' sensors to look at the runs in progress",
            lambda: deployment.query("SELECT count(*) FROM job_ticks")[0][0] >= evaluated + 2,
        )
        statuses = dict(deployment.query("SELECT run_id, status FROM runs"))
        assert (statuses[dead], statuses[live]) == ("STARTED", "STARTED"), deployment.logs()

        deployment.kill("pipeline_a-code-server")
        deployment.wait_for(
            "the crashed run to be failed by the other code server's sensor",
            lambda: dict(deployment.query("SELECT run_id, status FROM runs"))[dead] == "FAILURE",
        )
        failure = deployment.query(
            "SELECT event FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            dead,
            "PIPELINE_FAILURE",
        )
        assert "No heartbeat from this run" in failure[0][0]
        assert list(deployment.wait_for_runs(BACKFILL_TAG, other).values()) == ["SUCCESS"]

        app.set_faults(page_in_progress=False)
        deployment.start_code_server(deployment.pipelines["pipeline_a"])
        again = deployment.wait_for(
            "the first pipeline's code location back",
            lambda: _launched(deployment, keys["app"], days),
        )
        assert list(deployment.wait_for_runs(BACKFILL_TAG, again).values()) == ["SUCCESS"], (
            deployment.logs()
        )
    for name, emulator in (("app", app), ("web", web)):
        assert emulator.stats.max_in_flight <= 3
        assert emulator.stats.rate_limited == 0
        for event, table in (("Charged", "charged"), ("App Launched", "app_launched")):
            expected = {d: emulator.true_count(event, d) for d in days}
            assert rows_per_day(postgres_server, warehouse, f"{name}.{table}") == expected


def _launched(deployment: Deployment, keys: list[list[str]], days: list[date]) -> str | None:
    """A backfill's id, once the webserver takes it (a restarted location reloads first)."""
    params = {
        "assetSelection": [{"path": key} for key in keys],
        "partitionNames": [day.isoformat() for day in days],
    }
    try:
        answer = deployment.graphql(LAUNCH_BACKFILL, {"params": params})
    except httpx.HTTPError:
        return None
    launched = answer["launchPartitionBackfill"]
    return launched.get("backfillId")
