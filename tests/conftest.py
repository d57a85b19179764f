"""Fixtures: every test gets its own LAKEHOUSE_HOME; real servers start on loopback and stop by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lakehouse import Lakehouse, Settings
from lakehouse.config import BrokerSettings, write_private
from lakehouse.reference import generate, write_files

if TYPE_CHECKING:
    from lakehouse.local import Layout

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


@dataclass
class Broker:
    """The broker a test runs against. The test's own clients (``produce``, ``ensure_topics``,
    ``Sink``, kafka-python through ``client_config``) take ``settings``; its `lakehouse` commands
    take ``env`` (``run_cli(..., env=broker.env)``): empty for Tansu, which the CLI finds through
    the broker state recorded in the home; for Apache Kafka, its address, SASL_SSL as
    ``lakehouse`` with the password in a secrets file, and its CA."""

    kind: str  # "tansu" | "kafka"
    settings: BrokerSettings
    env: dict[str, str]
    _restart: Callable[[], None]

    def restart(self) -> None:
        """Stop the broker by its PID and start it again on the same port (and, for Kafka, the
        same data directory). Tansu's local log is in memory: a restart empties it."""
        self._restart()


def broker_client_env(settings: BrokerSettings, secrets_dir: Path) -> dict[str, str]:
    """The environment pointing `lakehouse` commands at a SASL_SSL broker: the password goes to
    ``secrets_dir/lakehouse_broker__password`` (0600), never into an environment variable."""
    assert settings.password is not None
    write_private(secrets_dir / "lakehouse_broker__password", settings.password.get_secret_value())
    return {
        "LAKEHOUSE_BROKER__BOOTSTRAP": settings.bootstrap or "",
        "LAKEHOUSE_BROKER__SECURITY_PROTOCOL": settings.security_protocol,
        "LAKEHOUSE_BROKER__SASL_MECHANISM": settings.sasl_mechanism,
        "LAKEHOUSE_BROKER__USERNAME": settings.username or "",
        "LAKEHOUSE_BROKER__CA_FILE": str(settings.ca_file),
        "LAKEHOUSE_SECRETS_DIR": str(secrets_dir),
    }


def require_kafka_artifacts() -> Layout:
    """The Apache Kafka layout of the artifact cache; the test skips, naming `lakehouse stack
    install`, without it (or without the JDK it runs on)."""
    from lakehouse.errors import ArtifactUnavailable, ToolchainMissing
    from lakehouse.local import find_java, layouts

    try:
        layout = layouts()["kafka"]
        find_java(layout.java or 17, purpose="kafka")
    except (ArtifactUnavailable, ToolchainMissing) as exc:
        pytest.skip(f"needs Apache Kafka from the artifact cache: run `lakehouse stack install` ({exc})")
    return layout


@contextmanager
def apache_kafka(root: Path) -> Iterator[Broker]:
    """A fresh Apache Kafka (KRaft, SASL_SSL with SCRAM-SHA-512, ACLs, a CA of its own) in
    ``root``, reached as ``lakehouse``; stopped by its PID afterwards. ``restart()`` stops it
    and starts it again on the same data directory and port."""
    from lakehouse.config import ensure_local_tls
    from lakehouse.config._local_state import stack_kafka
    from lakehouse.local._kafka import start_kafka

    layout = require_kafka_artifacts()
    tls = ensure_local_tls(root / "tls", common_name="lakehouse test kafka")
    running = [start_kafka(root / "kafka", layout=layout, tls=tls)]
    try:
        settings = stack_kafka(running[0].to_json(), BrokerSettings())

        def restart() -> None:
            running[0].stop()
            running[0] = start_kafka(root / "kafka", layout=layout, tls=tls)
            bootstrap = running[0].endpoints["bootstrap"]
            assert bootstrap == settings.bootstrap, (
                f"Kafka came back at {bootstrap}, not {settings.bootstrap}"
            )

        yield Broker("kafka", settings, broker_client_env(settings, root / "secrets"), restart)
    finally:
        running[0].stop()


@contextmanager
def tansu(settings: Settings, env: dict[str, str] | None = None) -> Iterator[Broker]:
    """Tansu for ``settings``' home and profile (PLAINTEXT on loopback); stopped by its PID
    afterwards. ``restart()`` stops it and starts it again on the same port."""
    from lakehouse.local import start_broker, stop_broker

    state = start_broker(settings)
    port = int(str(state["bootstrap"]).rsplit(":", 1)[1])

    def restart() -> None:
        stop_broker(settings)
        start_broker(settings, port=port)

    try:
        yield Broker("tansu", BrokerSettings(bootstrap=str(state["bootstrap"])), dict(env or {}), restart)
    finally:
        stop_broker(settings)


BROKERS = [
    pytest.param("tansu", id="tansu"),
    pytest.param("kafka", id="kafka", marks=[pytest.mark.cluster, pytest.mark.slow]),
]


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest, home: Path, tmp_path: Path) -> Iterator[Broker]:
    """The test's broker, once each: Tansu on a free loopback port for this test's home, and a
    fresh Apache Kafka of the test's own (`cluster`: topics, groups and offsets never leak
    between tests). Both stopped by their PIDs afterwards."""
    if request.param == "tansu":
        with tansu(Settings(home=home)) as found:
            yield found
    else:
        with apache_kafka(tmp_path / "apache-kafka") as found:
            yield found


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
