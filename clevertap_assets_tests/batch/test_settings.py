"""The read path's process settings: one clear error for a bad value, defaults when unset."""

import pytest

from clevertap_assets.batch.settings import parse_processes


@pytest.mark.parametrize("value", ["0", "two", "-1", "65"])
def test_a_bad_parse_processes_setting_is_one_clear_error(monkeypatch, value: str) -> None:
    monkeypatch.setenv("CLEVERTAP_PARSE_PROCESSES", value)
    with pytest.raises(ValueError, match=rf"CLEVERTAP_PARSE_PROCESSES='{value}'.* from 1 to 64"):
        parse_processes()


def test_parse_processes_default_to_one_and_follow_the_setting(monkeypatch) -> None:
    monkeypatch.delenv("CLEVERTAP_PARSE_PROCESSES", raising=False)
    assert parse_processes() == 1
    monkeypatch.setenv("CLEVERTAP_PARSE_PROCESSES", "3")
    assert parse_processes() == 3
