"""Local state is its owner's alone, and plaintext working copies do not outlive their use."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from rich.console import Console

from lakehouse import Lakehouse, Settings
from lakehouse.config import private_dir, scratch_dir
from lakehouse.reference import generate

pytestmark = pytest.mark.unit


def test_private_dir_creates_and_tightens(tmp_path: Path) -> None:
    created = private_dir(tmp_path / "a" / "b")
    assert created.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    os.chmod(loose, 0o755)  # noqa: S103 - the state a home from an older version is in
    assert private_dir(loose).stat().st_mode & 0o777 == 0o700


def test_scratch_dirs_go_when_done_failed_or_abandoned(tmp_path: Path) -> None:
    parent = tmp_path / "staging"
    abandoned = parent / "run-999999999-dead"  # left by a process that no longer runs
    abandoned.mkdir(parents=True)
    (abandoned / "model.parquet").write_bytes(b"plaintext")
    running = parent / f"run-{os.getpid()}-live"  # another run of a live process: kept
    running.mkdir()
    with scratch_dir(parent, "run-") as path:
        assert path.stat().st_mode & 0o777 == 0o700 and path.parent == parent
        (path / "copy.parquet").write_bytes(b"plaintext")
        assert not abandoned.exists() and running.exists()
    assert not path.exists()
    with pytest.raises(RuntimeError), scratch_dir(parent, "run-") as failed:
        (failed / "copy.parquet").write_bytes(b"plaintext")
        raise RuntimeError("the load failed")
    assert not failed.exists()
    assert parent.stat().st_mode & 0o777 == 0o700


def test_demo_reference_files_do_not_outlive_the_load(home: Path) -> None:
    from lakehouse.reference._demo import _load_reference

    legacy = home / "reference" / "scale-1-seed-42"  # where earlier versions kept them
    legacy.mkdir(parents=True)
    (legacy / "customers.parquet").write_bytes(b"plaintext names and addresses")
    outputs = []
    with Lakehouse(Settings(home=home)) as lh:
        for _ in range(2):  # rerunnable: the second run recognises every file as loaded
            out = io.StringIO()
            _load_reference(lh.settings, lh, scale=0.05, seed=3, console=Console(file=out, width=120))
            outputs.append(out.getvalue())
            outside = [p for p in home.rglob("*.parquet") if (home / "warehouse") not in p.parents]
            assert outside == []  # no copy of the reference files outside Iceberg
            assert not (home / "reference").exists()
            assert list((home / "state" / "reference").iterdir()) == []
        customers = lh.sql("select count(*) as n from bronze.customers").column("n")[0].as_py()
    assert outputs[0].count("  already loaded") == 0 and outputs[0].count(" rows") == 12
    assert outputs[1].count("  already loaded") == 12
    assert customers == generate(0.05, 3)["customers"].num_rows  # loaded once, not twice


def test_write_private_narrows_an_existing_wider_file_and_refuses_a_link(tmp_path: Path) -> None:
    from lakehouse.config import write_private

    existing = tmp_path / "credentials.json"
    existing.write_text("old, and longer than what replaces it")
    existing.chmod(0o644)
    write_private(existing, "new")
    assert existing.read_text() == "new"
    assert stat.S_IMODE(existing.stat().st_mode) == 0o600
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    link = tmp_path / "planted"
    link.symlink_to(target)
    with pytest.raises(OSError):
        write_private(link, "secret")
    assert target.read_text() == "untouched"
