"""Fixtures: every test gets its own LAKEHOUSE_HOME; real servers start on loopback and stop by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lakehouse import Lakehouse, Settings
from lakehouse.reference import generate, write_files

REPO = Path(__file__).resolve().parents[1]
SMALL_SCALE = 0.15  # 2 stores, 20 products, 450 customers, 120 days
LAKEHOUSE_BIN = str(Path(sys.executable).parent / "lakehouse")
QUERY_SERVER_ENV = "LAKEHOUSE_ENGINE__QUERY_SERVER"


def run_cli(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed `lakehouse` command as a user would."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    environment["LAKEHOUSE_HOME"] = str(home)
    environment[QUERY_SERVER_ENV] = "off"  # a test that wants the warm query server turns it on
    environment.update(env or {})
    return subprocess.run(
        [LAKEHOUSE_BIN, *args], capture_output=True, text=True, env=environment, timeout=600
    )


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LAKEHOUSE_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("LAKEHOUSE_HOME", str(tmp_path / "home"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def lh(home: Path) -> Iterator[Lakehouse]:
    with Lakehouse(Settings(home=home)) as lakehouse:
        yield lakehouse


@pytest.fixture(scope="session")
def reference_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The reference domain at a small scale, written once as Parquet."""
    return write_files(generate(SMALL_SCALE, seed=7), tmp_path_factory.mktemp("reference"))


def load_reference(lakehouse: Lakehouse, files: dict[str, Path]) -> None:
    for name, path in files.items():
        lakehouse.load(f"bronze.{name}", [path])


def dbt_build(home: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("dbt", "build", *extra, home=home, env=env)


@pytest.fixture(scope="session")
def built_home(tmp_path_factory: pytest.TempPathFactory, reference_files: dict[str, Path]) -> Path:
    """A local lakehouse with bronze loaded and every dbt layer built, shared by read-only tests."""
    home = tmp_path_factory.mktemp("built") / "home"
    with Lakehouse(Settings(home=home)) as lakehouse:
        load_reference(lakehouse, reference_files)
    result = dbt_build(home)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return home


@pytest.fixture
def built(built_home: Path) -> Iterator[Lakehouse]:
    with Lakehouse(Settings(home=built_home)) as lakehouse:
        yield lakehouse


@pytest.fixture(scope="module")
def stack_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """SeaweedFS (S3 + Iceberg REST) started for the stack profile, stopped by its PID afterwards."""
    from lakehouse.local import start_stack, stop_stack

    home = tmp_path_factory.mktemp("stack") / "home"
    settings = Settings(profile="stack", home=home)
    start_stack(settings, services=("seaweedfs",))
    try:
        yield home
    finally:
        stop_stack(settings)


@pytest.fixture
def broker(home: Path) -> Iterator[str]:
    """Tansu on a free loopback port for this test's home; stopped by its PID afterwards."""
    from lakehouse.local import start_broker, stop_broker

    settings = Settings(home=home)
    state = start_broker(settings)
    try:
        yield str(state["bootstrap"])
    finally:
        stop_broker(settings)


def start_cli(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the `lakehouse` command in the background (for signals); the caller waits for it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LAKEHOUSE_")}
    environment["LAKEHOUSE_HOME"] = str(home)
    environment[QUERY_SERVER_ENV] = "off"  # a test that wants the warm query server turns it on
    environment.update(env or {})
    return subprocess.Popen(
        [LAKEHOUSE_BIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment
    )


TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test carries exactly one tier (pyproject.toml's markers); collection fails otherwise."""
    wrong = []
    for item in items:
        tiers = sorted({mark.name for mark in item.iter_markers() if mark.name in TIERS})
        if len(tiers) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(tiers) or 'no tier'}")
    if wrong:
        raise pytest.UsageError(
            f"each test needs exactly one tier marker of {', '.join(TIERS)} "
            f"(pytestmark or @pytest.mark.<tier>); wrong: " + "; ".join(wrong)
        )


@pytest.fixture(scope="session")
def cluster_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The whole stack (SeaweedFS, PostgreSQL, Nessie, OPA, Trino, Apache Kafka) started once per
    test session for the `cluster` tests, stopped by its recorded PIDs afterwards. Without the
    artifacts `lakehouse stack install` fetches, those tests skip and say so."""
    from lakehouse.errors import ArtifactUnavailable
    from lakehouse.local import layouts, start_stack, stop_stack

    try:
        layouts()
    except ArtifactUnavailable as exc:
        pytest.skip(f"needs the stack's server artifacts: run `lakehouse stack install` ({exc})")
    home = tmp_path_factory.mktemp("cluster") / "home"
    settings = Settings(profile="stack", home=home)
    try:
        start_stack(settings)
        yield home
    finally:
        stop_stack(settings)
