"""The stack's PostgreSQL data outside the home (when run as root) does not outlive its home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lakehouse.local import _postgres

pytestmark = pytest.mark.unit


def test_data_of_a_removed_home_is_removed_and_data_of_a_live_home_or_running_server_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_postgres, "ROOT_DATA", tmp_path / "postgres")
    (tmp_path / "postgres").mkdir()
    live_home = tmp_path / "live" / "stack" / "postgres"
    live_home.mkdir(parents=True)
    (live_home / "credentials.json").write_text("{}")

    def data_dir(name: str, owner: Path, *, pid: int | None = None) -> Path:
        data = tmp_path / "postgres" / name
        data.mkdir()
        (data / "PG_VERSION").write_text("15")
        if pid is not None:
            (data / "postmaster.pid").write_text(f"{pid}\n/data\n")
        data.with_suffix(".owner").write_text(str(owner))
        return data

    orphan = data_dir("aaaa", tmp_path / "gone" / "stack" / "postgres")
    dead_server = data_dir("bbbb", tmp_path / "gone2" / "stack" / "postgres", pid=2**22 + 1)
    live = data_dir("cccc", live_home)
    running = data_dir("dddd", tmp_path / "gone3" / "stack" / "postgres", pid=os.getpid())

    _postgres._remove_orphans()

    assert not orphan.exists() and not orphan.with_suffix(".owner").exists()
    assert not dead_server.exists()
    assert live.exists() and live.with_suffix(".owner").exists()
    assert running.exists()  # its home is gone, but a server still serves it: never pulled away
