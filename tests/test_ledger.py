"""The one commit every writer uses, and the ledger it records: a conflicting writer makes it
wait and plan again (never doubling rows), and the ledger of loaded files stays bounded."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lakehouse import Lakehouse, LoadError
from lakehouse.iceberg import BATCH_IDS, Backoff, Planned, commit_with_replan, loaded_batch_ids
from lakehouse.iceberg import _ledger as ledger

pytestmark = pytest.mark.unit


def _table(lh: Lakehouse, tmp_path: Path) -> tuple[str, Path]:
    seed = tmp_path / "seed.parquet"
    pq.write_table(pa.table({"k": pa.array([0], pa.int64()), "source": ["seed"]}), seed)
    lh.load("bronze.things", [seed], create=True)
    return "bronze.things", seed


def _rows(source: str, n: int) -> pa.Table:
    return pa.table({"k": pa.array(range(n), pa.int64()), "source": [source] * n})


class _Waits:
    def __init__(self) -> None:
        self.slept: list[float] = []

    def backoff(self, attempts: int = 8) -> Backoff:
        return Backoff(attempts=attempts, base=0.5, cap=4.0, sleep=self.slept.append, uniform=lambda a, b: b)


def test_a_conflicting_writer_makes_the_commit_wait_replan_and_return_the_winning_plan(
    lh: Lakehouse, tmp_path: Path
) -> None:
    _table(lh, tmp_path)
    ours = lh.catalog.load_table(("bronze", "things"))
    theirs = lh.catalog.load_table(("bronze", "things"))
    waits = _Waits()
    plans: list[set[str]] = []

    def plan(current: object) -> Planned[list[str]] | None:
        done = loaded_batch_ids(current)  # type: ignore[arg-type]
        if not plans:  # another writer lands batch "a" between our read and our commit
            commit_with_replan(
                lh.catalog, theirs, lambda _t: Planned(_rows("theirs", 3), {BATCH_IDS: json.dumps(["a"])})
            )
        plans.append(done)
        missing = [b for b in ("a", "b") if b not in done]
        rows = pa.concat_tables([_rows(f"ours-{b}", 2) for b in missing])
        return Planned(rows, {BATCH_IDS: json.dumps(missing)}, missing)

    committed = commit_with_replan(lh.catalog, ours, plan, backoff=waits.backoff())

    assert committed is not None
    assert committed.attempts == 2
    assert committed.result == ["b"]  # the plan that won, not the first one
    assert "a" not in plans[0]
    assert "a" in plans[1]  # the replan read the other writer's ledger
    sources = lh.sql("select source, count(*) n from bronze.things group by 1 order by 1").to_pylist()
    assert sources == [
        {"source": "ours-b", "n": 2},
        {"source": "seed", "n": 1},
        {"source": "theirs", "n": 3},
    ]
    assert waits.slept == [0.5]  # one wait, the first step of the backoff


def test_a_commit_that_keeps_conflicting_gives_up_with_nothing_of_its_own_written(
    lh: Lakehouse, tmp_path: Path
) -> None:
    _table(lh, tmp_path)
    ours = lh.catalog.load_table(("bronze", "things"))
    waits = _Waits()
    rivals = iter(range(100))

    def plan(_current: object) -> Planned[None]:
        rival = lh.catalog.load_table(("bronze", "things"))  # always one step ahead of us
        commit_with_replan(lh.catalog, rival, lambda _t: Planned(_rows(f"rival-{next(rivals)}", 1)))
        return Planned(_rows("ours", 5))

    with pytest.raises(LoadError, match="kept conflicting with other writers after 4 attempts"):
        commit_with_replan(lh.catalog, ours, plan, backoff=waits.backoff(attempts=4))

    assert lh.sql("select count(*) from bronze.things where source = 'ours'").column(0)[0].as_py() == 0
    assert waits.slept == [0.5, 1.0, 2.0, 4.0]  # doubling, capped at 4.0


def test_backoff_waits_are_jittered_within_the_doubling_bound_and_capped() -> None:
    seen: list[tuple[float, float]] = []
    slept: list[float] = []
    backoff = Backoff(
        base=0.1, cap=0.5, sleep=slept.append, uniform=lambda a, b: seen.append((a, b)) or b / 2
    )
    for attempt in range(5):
        backoff.wait(attempt)
    assert seen == [(0.0, 0.1), (0.0, 0.2), (0.0, 0.4), (0.0, 0.5), (0.0, 0.5)]
    assert slept == [0.05, 0.1, 0.2, 0.25, 0.25]


def test_the_ledger_of_loaded_files_stays_bounded_and_still_skips_every_loaded_file(
    lh: Lakehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger, "RECENT_BATCH_IDS", 4)
    _, seed = _table(lh, tmp_path)
    files = [seed]
    for i in range(13):
        path = tmp_path / f"f{i}.parquet"
        pq.write_table(_rows(f"f{i}", 1), path)
        files.append(path)
        assert lh.load("bronze.things", [path]).files_loaded == [str(path)]
        recent = json.loads(lh.catalog.load_table(("bronze", "things")).properties[BATCH_IDS])
        assert len(recent) <= 4

    table = lh.catalog.load_table(("bronze", "things"))
    archive = table.properties[ledger.BATCH_IDS_FILE]
    assert len(pq.read_table(archive.removeprefix("file://")).column("batch_id")) >= 10
    metadata_dir = Path(archive.removeprefix("file://")).parent
    assert [p.name for p in metadata_dir.glob("ledger-batch-ids-*")] == [
        Path(archive).name
    ]  # old ones removed

    ledger._ARCHIVES.clear()  # read the archive back from storage, as a new process would
    again = lh.load("bronze.things", files)
    assert again.files_loaded == []
    assert sorted(again.files_skipped) == sorted(str(f) for f in files)
    assert lh.sql("select count(*) from bronze.things").column(0)[0].as_py() == 14
