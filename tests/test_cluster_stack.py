"""`lakehouse stack start|stop|status`: the cluster's own services as processes on loopback."""

from __future__ import annotations

import contextlib
import json
import stat
from pathlib import Path

import pytest

from lakehouse import Settings
from lakehouse.config import read_state, recorded_alive
from lakehouse.local import SERVICES, Running, listening_sockets, stack_status, stop_stack

from .conftest import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.slow]


def _secrets_of(home: Path) -> list[str]:
    """Every password and key the stack generated, from the 0600 files that hold them."""
    found = []
    for path in (home / "stack").rglob("*.json"):
        if path.stat().st_mode & 0o077 == 0 and ("credential" in path.name or "password" in path.name):
            data = json.loads(path.read_text())
            # an access key *id* names a key, like a user name: only the secrets themselves count
            values = [v for k, v in data.items() if not k.endswith("_id")] if isinstance(data, dict) else []
            found += [v for v in values if isinstance(v, str) and len(v) >= 16]
    state = read_state(Settings(profile="stack", home=home)) or {}
    found.append(state["secret_access_key"])
    return found


def test_every_service_runs_and_answers(cluster_home: Path) -> None:
    result = run_cli("stack", "status", "-o", "json", home=cluster_home, env={"LAKEHOUSE_PROFILE": "stack"})
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["running"] is True
    assert list(status["services"]) == list(SERVICES)
    for name, service in status["services"].items():
        assert service["running"] and service["healthy"], (name, service)


def test_every_service_listens_on_loopback_only(cluster_home: Path) -> None:
    status = stack_status(Settings(profile="stack", home=cluster_home))
    for name, service in status.items():
        addresses = listening_sockets(service["pid"])
        assert addresses, name
        assert {address for address, _ in addresses} == {"127.0.0.1"}, (name, addresses)


def test_state_and_credentials_are_private_and_no_secret_is_logged_or_on_a_command_line(
    cluster_home: Path,
) -> None:
    settings = Settings(profile="stack", home=cluster_home)
    state_file = settings.state_dir / "stack.json"
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    secrets = _secrets_of(cluster_home)
    assert len(secrets) >= 4
    status = stack_status(settings)
    for name, service in status.items():
        for path in service.get("files", {}).values():
            if "credential" in path or "password" in path or path.endswith(".properties"):
                assert stat.S_IMODE(Path(path).stat().st_mode) == 0o600, (name, path)
        log = Path(service["log"]).read_text(errors="replace")
        cmdline = Path(f"/proc/{service['pid']}/cmdline").read_bytes().decode(errors="replace")
        for secret in secrets:
            assert secret not in log, f"a secret in {service['log']}"
            assert secret not in cmdline, f"a secret on {name}'s command line"
    records = json.dumps((read_state(settings) or {}).get("services"))
    for secret in secrets:
        assert secret not in records


def test_postgres_takes_only_tls_logins_and_each_role_only_its_database(cluster_home: Path) -> None:
    import psycopg2

    from lakehouse.local._postgres import connect, password

    record = (read_state(Settings(profile="stack", home=cluster_home)) or {})["services"]["postgres"]
    postgres = Running.from_json(record)
    endpoint, ca = postgres.endpoints, postgres.files["ca"]
    connection = connect(endpoint, "nessie", password(postgres, "nessie"), ca, database="nessie")
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
        assert cursor.fetchone() == (True,)
    with pytest.raises(psycopg2.OperationalError, match="permission denied for database"):
        connect(endpoint, "nessie", password(postgres, "nessie"), ca, database="registry")
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        connect(endpoint, "nessie", "not-the-password", ca, database="nessie")
    with pytest.raises(psycopg2.OperationalError, match=r"no encryption|pg_hba\.conf"):
        psycopg2.connect(
            host=endpoint["host"],
            port=int(endpoint["port"]),
            user="nessie",
            password=password(postgres, "nessie"),
            dbname="nessie",
            sslmode="disable",
            connect_timeout=5,
        )


def test_nessie_commits_an_iceberg_table_to_encrypted_objects_and_keeps_it_in_postgres(
    cluster_home: Path,
) -> None:
    import pyarrow as pa
    from pyiceberg.catalog.rest import RestCatalog

    from lakehouse.local._stack import LAKEHOUSE_BUCKET, s3_client

    settings = Settings(profile="stack", home=cluster_home)
    state = read_state(settings) or {}
    nessie = Running.from_json(state["services"]["nessie"])
    catalog = RestCatalog(
        "nessie",
        uri=nessie.endpoints["iceberg"],
        warehouse=nessie.endpoints["warehouse"],
        **{
            "s3.endpoint": state["s3_endpoint"],
            "s3.region": state["region"],
            "s3.access-key-id": state["access_key_id"],
            "s3.secret-access-key": state["secret_access_key"],
            "s3.remote-signing-enabled": "false",
        },
    )
    catalog.create_namespace_if_not_exists("probe")
    table = catalog.create_table("probe.readings", schema=pa.schema([("n", pa.int64())]))
    table.append(pa.table({"n": list(range(100))}))
    assert catalog.load_table("probe.readings").scan().to_arrow().num_rows == 100
    client = s3_client(settings)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=LAKEHOUSE_BUCKET, Prefix="probe")["Contents"]]
    data = [k for k in keys if k.endswith(".parquet")]
    assert data, keys
    head = client.head_object(Bucket=LAKEHOUSE_BUCKET, Key=data[0])
    assert head.get("ServerSideEncryption") == "AES256", head
    from lakehouse.local._postgres import connect, password

    postgres = Running.from_json(state["services"]["postgres"])
    connection = connect(
        postgres.endpoints, "nessie", password(postgres, "nessie"), postgres.files["ca"], database="nessie"
    )
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("select count(*) from information_schema.tables where table_schema = 'public'")
        (tables,) = cursor.fetchone()
    assert tables > 0  # Nessie's version store lives in its database


def test_a_failing_service_stops_what_the_start_started_and_names_its_cause(tmp_path: Path) -> None:
    """Nessie cannot start without a JDK new enough: the error says so in one line, and the
    SeaweedFS and PostgreSQL started for it are stopped again."""
    home = tmp_path / "home"
    env = {"LAKEHOUSE_PROFILE": "stack", "LAKEHOUSE_JAVA_HOME": str(tmp_path / "no-jdk")}
    result = run_cli("stack", "start", "--services", "nessie", home=home, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: "), result.stderr
    assert "LAKEHOUSE_JAVA_HOME" in result.stderr or "JDK" in result.stderr, result.stderr
    settings = Settings(profile="stack", home=home)
    state = read_state(settings)
    assert not state or not recorded_alive(state)
    postgres_log = home / "stack" / "postgres" / "postgres.log"
    assert postgres_log.exists()  # it did start before Nessie failed
    assert stack_status(settings) == {} or not any(s["running"] for s in stack_status(settings).values())
    stop_stack(settings)


def test_start_status_stop_of_a_subset_by_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"LAKEHOUSE_PROFILE": "stack"}
    started = run_cli("stack", "start", "--services", "postgres", "-o", "json", home=home, env=env)
    assert started.returncode == 0, started.stderr
    services = json.loads(started.stdout)
    assert set(services) == {"seaweedfs", "postgres"}
    pids = [s["pid"] for s in services.values()]
    again = run_cli("stack", "start", "--services", "postgres", "-o", "json", home=home, env=env)
    assert [s["pid"] for s in json.loads(again.stdout).values()] == pids  # kept, not restarted
    unknown = run_cli("stack", "start", "--services", "spark", home=home, env=env)
    assert unknown.returncode == 1 and "no stack service spark" in unknown.stderr
    stopped = run_cli("stack", "stop", home=home, env=env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    status = run_cli("stack", "status", home=home, env=env)
    assert status.returncode == 0 and "not running" in status.stdout
