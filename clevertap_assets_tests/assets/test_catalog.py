"""The catalog from the events export: what the UI shows of an event before and after a
load launched as the UI does (no tags of ours), and the run's tags that tell it apart."""

from dagster import AssetKey, AssetSelection, instance_for_test, materialize

from clevertap_assets.assets.catalog import EVENT_TYPE_TAG
from clevertap_assets.days import local_today
from clevertap_assets.definitions import build_definitions
from clevertap_assets.keys import DAYS_TAG, EVENT_TAG
from clevertap_assets.settings import load_settings
from clevertap_assets.source.normalise import SYSTEM_COLUMNS
from clevertap_assets_tests.harness import fast_clevertap

CSV = (
    "Event Name,Event Type,Description,Created On\n"
    "Charged,System,Purchase completed (carries Items),2023-01-12\n"
    "Added To Cart,Custom,,2023-02-01\n"
)


def test_an_event_is_described_by_its_export_and_its_days_by_their_own_figures(tmp_path, emulator):
    (tmp_path / "events.csv").write_text(CSV, encoding="utf-8")
    settings = load_settings(
        events_csv=tmp_path / "events.csv",
        api_url=emulator.url,
        history_days=7,
        asset_owners="data@example.com, team:growth",
    )
    definitions = build_definitions(settings)
    charged, cart = AssetKey(["clevertap", "charged"]), AssetKey(["clevertap", "added_to_cart"])
    graph = definitions.resolve_asset_graph()
    spec = graph.get(charged)
    assert spec.description.startswith("Purchase completed (carries Items)\n")
    assert "System event 'Charged'" in spec.description
    assert "Custom event 'Added To Cart'" in graph.get(cart).description
    assert spec.tags[EVENT_TYPE_TAG] == "System"
    assert spec.owners == ["data@example.com", "team:growth"]
    columns = {c.name: c.description for c in spec.metadata["dagster/column_schema"].columns}
    assert list(columns) == [*SYSTEM_COLUMNS, "_loaded_at"]
    assert all(columns.values())

    today = local_today(settings.timezone)
    with instance_for_test() as instance:
        result = materialize(
            list(definitions.assets or []),
            selection=AssetSelection.assets(charged).without_checks(),
            partition_key=today.isoformat(),
            instance=instance,
            resources={**(definitions.resources or {}), "clevertap": fast_clevertap(emulator)},
        )
        (materialization,) = result.asset_materializations_for_node("clevertap_events")
        metadata = list(materialization.metadata)
        # The day's figures come first, before the run's totals, the preview and the column
        # maps (the stored order: assets/test_events.py).
        day = [metadata.index(key) for key in ("duplicates_dropped", "dagster/partition_row_count")]
        run = [metadata.index(key) for key in ("window_rows_written", "preview", "column_keys")]
        assert max(day) < min(run)
        loaded = materialization.metadata["dagster/column_schema"].value.columns
        described = {c.name: c.description for c in loaded if c.description}
        assert described == columns  # the data columns are named, the system ones described
        tags = instance.get_run_by_id(result.run_id).tags
        assert tags[EVENT_TAG] == "charged" and tags[DAYS_TAG] == today.isoformat()
