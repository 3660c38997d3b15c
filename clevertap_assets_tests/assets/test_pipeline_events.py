"""The pipeline's facts: derived once from the settings, and what every builder takes."""

import ast
from pathlib import Path

from dagster import AssetCheckKey, AssetKey

from clevertap_assets.assets.pipeline_events import pipeline_facts
from clevertap_assets.definitions import build_code_location
from clevertap_assets.settings import load_settings

PACKAGE = Path(__file__).resolve().parents[2] / "clevertap_assets"
SETTINGS_READERS = {
    "assets/pipeline_events.py",
    "assets/partitions.py",
    "automation/alerts.py",
    "automation/alert_delivery.py",
}
"""Where the settings may still reach among the assets and the automation: the facts
themselves, the partitions they hold (also `recent_range` for the CLI) and the alerts, whose
webhook URL and SMTP password are secrets that stay in the settings."""


def _settings(tmp_path, **overrides):
    (tmp_path / "events.csv").write_text("Event Name\nCharged\nApp Launched\n", encoding="utf-8")
    return load_settings(events_csv=tmp_path / "events.csv", **overrides)


def test_each_event_carries_its_key_table_checks_and_limits(tmp_path, monkeypatch):
    monkeypatch.setenv("DUCKDB_SCHEMA", "raw")
    pipeline = pipeline_facts(_settings(tmp_path, table_prefix="ho", max_row_bytes=1000))
    charged = pipeline.events[0]
    assert (charged.name, charged.key, charged.table) == (
        "Charged",
        AssetKey(["clevertap", "charged"]),
        "ho_charged",
    )
    assert charged.check_keys == [
        AssetCheckKey(charged.key, "no_duplicate_record_ids"),
        AssetCheckKey(charged.key, "row_count_matches_clevertap"),
    ]
    assert (charged.normalise.event_name, charged.normalise.max_row_bytes) == ("Charged", 1000)
    assert pipeline.schema == "raw"
    assert (pipeline.webhook.key, pipeline.webhook.table) == (
        AssetKey(["clevertap", "webhook_events"]),
        "ho_webhook_events",
    )


def test_the_definitions_are_built_from_one_set_of_facts(tmp_path):
    """The reader, its checks and the webhook asset show what the facts say, so no builder
    derived a table, a partitions definition or a check of its own."""
    settings = _settings(tmp_path)
    pipeline = pipeline_facts(settings)
    graph = build_code_location(settings).resolve_asset_graph()
    for event in pipeline.events:
        node = graph.get(event.key)
        assert node.metadata["table"] == event.table
        assert node.partitions_def == pipeline.partitions_def
        assert set(event.check_keys) <= set(graph.asset_check_keys)
    webhook = graph.get(pipeline.webhook.key)
    assert webhook.partitions_def == pipeline.webhook.ranges
    assert webhook.metadata["table"] == pipeline.webhook.table


def test_the_builders_take_the_facts_not_the_settings():
    """A builder reading the settings derives again what the facts hold (a table, a schema,
    the partitions), and can drift from them."""
    readers = set()
    for folder in ("assets", "automation"):
        for path in sorted((PACKAGE / folder).glob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            imported = {
                alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "clevertap_assets.settings"
                for alias in node.names
            }
            if "PipelineSettings" in imported:
                readers.add(str(path.relative_to(PACKAGE)))
    assert readers <= SETTINGS_READERS
