"""The webhook path's settings, read from the environment."""

from pathlib import Path

import pytest

from clevertap_assets.webhooks.settings import DEFAULT_INBOX_PATH, inbox_path_from_env


def test_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("WEBHOOK_INBOX_PATH", raising=False)
    assert inbox_path_from_env() == DEFAULT_INBOX_PATH
    monkeypatch.setenv("WEBHOOK_INBOX_PATH", str(tmp_path / "x.sqlite3"))
    assert inbox_path_from_env() == tmp_path / "x.sqlite3"
