"""OPA and Trino of the stack profile, as processes from the verified artifacts, hardened: Trino
answers only HTTPS with a password, OPA (mutual TLS, Trino's certificate only) decides with the
compiled policy of policies/, the Iceberg catalog is a REST catalog with its data on S3
(SeaweedFS here), and no secret reaches a command line or a log.

One module fixture starts SeaweedFS (conftest's ``stack_home``), OPA and Trino once; the tests
skip, naming `lakehouse stack install`, while the artifact cache lacks the servers. Until the
lock's Trino keeps ``plugin/password-authenticators``, the fixture adds that plugin from the
verified server tarball (``_with_password_plugin``)."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from lakehouse import Settings
from lakehouse.config import ensure_local_tls, project_of, read_state
from lakehouse.errors import ArtifactUnavailable
from lakehouse.local import Layout, find_java, layouts, listening_sockets
from lakehouse.local._opa import client_context, decide, decision_paths, start_opa
from lakehouse.local._service import Running
from lakehouse.local._trino import ENV_SHARED_SECRET, query, start_trino

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

OUTSIDER = "mallory"  # has a Trino password, but the policy does not know her


@dataclass
class Cluster:
    opa: Running
    trino: Running
    passwords: dict[str, str]
    ca: Path
    secrets: dict[str, str]  # name -> value that must appear in no log and no command line

    @property
    def url(self) -> str:
        return self.trino.endpoints["https"]

    def query(self, user: str, sql: str, *, password: str | None = None) -> list[list[Any]]:
        return query(self.url, user, password or self.passwords[user], self.ca, sql)


def _layouts() -> dict[str, Layout]:
    try:
        return layouts()
    except ArtifactUnavailable as exc:
        pytest.skip(f"needs the stack's server artifacts: run `lakehouse stack install` ({exc})")


def _create_tables(settings: Settings) -> None:
    """Two tables shaped like ones the policy names, written with pyiceberg through the REST
    catalog onto S3: a row filter (store) applies to one, a column mask (pii) to the other."""
    from lakehouse.catalog import load_catalog

    catalog = load_catalog(settings)
    tables = {
        "gold.mart_daily_sales_by_store": pa.table(
            {"store_id": ["S001", "S001", "S002"], "revenue": [10.0, 20.0, 5.0]}
        ),
        "gold.dim_customer": pa.table(
            {
                "customer_id": ["C1", "C2"],
                "full_name": ["Ada Lovelace", "Alan Turing"],
                "home_store_id": ["S001", "S002"],
            }
        ),
    }
    for identifier, rows in tables.items():
        catalog.create_table(identifier, schema=rows.schema).append(rows)


@pytest.fixture(scope="module")
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    from lakehouse.governance import load_policy, table_schemas, write_compiled

    found = _layouts()  # skips before SeaweedFS is started for nothing
    stack_home: Path = request.getfixturevalue("stack_home")
    base = tmp_path_factory.mktemp("cluster-trino")
    settings = Settings(profile="stack", home=stack_home)
    state = read_state(settings)
    assert state, "SeaweedFS is not running"
    project = project_of(settings)
    schemas = table_schemas(project)
    policy = load_policy(project.policies_dir, schemas)
    write_compiled(policy, schemas, base / "policy")
    _create_tables(settings)
    credential = f"{state['access_key_id']}:{state['secret_access_key']}"
    iceberg = {
        "uri": state["iceberg_uri"],
        "warehouse": f"s3://{state['warehouse_bucket']}",
        "endpoint": state["s3_endpoint"],
        "region": state["region"],
        "access_key_id": state["access_key_id"],
        "secret_access_key": state["secret_access_key"],
        "credential": credential,
        "oauth2_server_uri": state["iceberg_uri"] + "/v1/oauth/tokens",
        "scope": "PRINCIPAL_ROLE:ALL",
    }
    tls = ensure_local_tls(stack_home / "stack" / "tls", common_name="lakehouse stack")
    opa = start_opa(base / "opa", layout=found["opa"], policy_dir=base / "policy" / "opa")
    try:
        trino = start_trino(
            base / "trino",
            layout=found["trino"],
            tls=tls,
            opa=opa,
            iceberg=iceberg,
            users=[*policy.principals, OUTSIDER],
        )
    except BaseException:
        opa.stop()
        raise
    try:
        environ = dict(
            line.split("=", 1)
            for line in Path(f"/proc/{trino.pid}/environ").read_bytes().decode().split("\0")
            if "=" in line
        )
        passwords = json.loads(Path(trino.files["passwords"]).read_text())
        yield Cluster(
            opa=opa,
            trino=trino,
            passwords=passwords,
            ca=tls[0],
            secrets={
                # the S3 access key id is an identifier: Trino's configuration dump logs it
                "S3 secret key": state["secret_access_key"],
                "catalog credential": credential,
                "internal shared secret": environ[ENV_SHARED_SECRET],
                **{f"password of {user}": password for user, password in passwords.items()},
            },
        )
    finally:
        trino.stop()
        opa.stop()


def _statement(url: str, *, context: ssl.SSLContext, authorization: str | None) -> int:
    """The HTTP status of POST /v1/statement (``select 1`` as alice) with this Authorization."""
    headers = {"X-Trino-User": "alice"}
    if authorization is not None:
        headers["Authorization"] = authorization
    request = urllib.request.Request(  # noqa: S310 - the server's https URL
        url + "/v1/statement", data=b"select 1", headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310 - our https URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.integration
def test_a_user_of_the_policy_runs_select_1_over_https_with_the_password_and_the_ca(cluster: Cluster) -> None:
    assert cluster.url.startswith("https://127.0.0.1:")
    assert cluster.query("alice", "select 1") == [[1]]
    assert cluster.query("ravi", "select current_user") == [["ravi"]]


@pytest.mark.integration
def test_a_wrong_password_and_no_password_are_refused_with_401(cluster: Cluster) -> None:
    context = ssl.create_default_context(cafile=str(cluster.ca))
    right = _basic("alice", cluster.passwords["alice"])
    assert _statement(cluster.url, context=context, authorization=right) == 200  # the probe itself works
    assert (
        _statement(
            cluster.url, context=context, authorization=_basic("alice", "not-" + cluster.passwords["alice"])
        )
        == 401
    )
    assert (
        _statement(cluster.url, context=context, authorization=_basic("alice", cluster.passwords["ravi"]))
        == 401
    )
    assert _statement(cluster.url, context=context, authorization=None) == 401
    import trino

    with pytest.raises(trino.exceptions.HttpError, match="401"):
        cluster.query("alice", "select 1", password="wrong")


@pytest.mark.integration
def test_plain_http_to_the_port_gets_no_http_answer_and_trino_listens_on_that_port_only(
    cluster: Cluster,
) -> None:
    port = int(cluster.url.rsplit(":", 1)[1])
    with pytest.raises(Exception) as refused:  # whatever breaks, it must not be an HTTP reply
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/info", timeout=10)
    assert not isinstance(refused.value, urllib.error.HTTPError)
    assert listening_sockets(cluster.trino.pid) == {("127.0.0.1", port)}


@pytest.mark.integration
def test_a_client_not_trusting_the_stack_ca_fails_the_handshake(cluster: Cluster) -> None:
    context = ssl.create_default_context()  # the system's CAs, not the stack's
    with pytest.raises(urllib.error.URLError) as failed:
        _statement(cluster.url, context=context, authorization=_basic("alice", cluster.passwords["alice"]))
    assert isinstance(failed.value.reason, ssl.SSLCertVerificationError)


@pytest.mark.integration
def test_a_user_the_policy_does_not_know_is_denied_by_opa(cluster: Cluster) -> None:
    import trino

    with pytest.raises(trino.exceptions.TrinoUserError, match="Access Denied: Cannot execute query"):
        cluster.query(OUTSIDER, "select 1")


@pytest.mark.integration
def test_a_granted_user_reads_the_iceberg_table_on_s3_and_one_without_the_grant_is_denied(
    cluster: Cluster,
) -> None:
    import trino

    rows = cluster.query(
        "dana", "select store_id, revenue from iceberg.gold.mart_daily_sales_by_store order by 1, 2"
    )
    assert rows == [["S001", 10.0], ["S001", 20.0], ["S002", 5.0]]
    with pytest.raises(trino.exceptions.TrinoUserError, match="Access Denied: Cannot select from columns"):
        cluster.query(
            "svc-ml", "select store_id from iceberg.gold.mart_daily_sales_by_store"
        )  # platinum only


@pytest.mark.integration
def test_the_row_filter_of_the_policy_applies(cluster: Cluster) -> None:
    sql = "select store_id, revenue from iceberg.gold.mart_daily_sales_by_store order by 2"
    assert cluster.query("sam", sql) == [["S001", 10.0], ["S001", 20.0]]  # store S001
    assert cluster.query("tess", sql) == [["S002", 5.0]]  # store S002


@pytest.mark.integration
def test_the_column_mask_of_the_policy_applies(cluster: Cluster) -> None:
    sql = "select customer_id, full_name from iceberg.gold.dim_customer order by 1"
    assert cluster.query("dana", sql) == [["C1", "***"], ["C2", "***"]]  # no pii clearance
    assert cluster.query("sam", sql) == [["C1", "***"]]  # masked, and filtered on home_store_id


@pytest.mark.integration
def test_opa_answers_only_trinos_certificate_and_only_the_decisions(cluster: Cluster) -> None:
    ca, client = Path(cluster.opa.files["ca"]), Path(cluster.opa.files["client"])
    alice = {
        "context": {"identity": {"user": "alice", "groups": []}},
        "action": {"operation": "ExecuteQuery"},
    }
    assert decide(cluster.opa.endpoints["allow"], alice, context=client_context(ca, client)) is True
    assert set(decision_paths()) == {"allow", "batch", "rowFilters", "batchColumnMasks"}
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)) as refused:
        decide(
            cluster.opa.endpoints["allow"], alice, context=client_context(ca, None)
        )  # no client certificate
    assert not isinstance(refused.value, urllib.error.HTTPError)
    url = cluster.opa.endpoints["url"]
    for method, path, body in (
        ("GET", "/v1/data", None),  # the whole data document (every user's attributes)
        ("POST", "/v1/data/lakehouse/users", b"{}"),
        ("PUT", "/v1/policies/backdoor", b"package lakehouse.trino\nallow := true\n"),
        ("PUT", "/v1/data/lakehouse/users/mallory", b'{"roles": ["compliance_officer"]}'),
        ("GET", "/health", None),
    ):
        request = urllib.request.Request(url + path, data=body, method=method)  # noqa: S310 - OPA's https URL
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10, context=client_context(ca, client))  # noqa: S310 - the test
        assert refused.value.code == 401, (method, path)


@pytest.mark.integration
def test_secret_files_are_0600_and_no_secret_is_in_a_log_or_a_command_line(cluster: Cluster) -> None:
    trino_root = Path(cluster.trino.files["passwords"]).parent
    opa_root = Path(cluster.opa.files["client"]).parent.parent
    for root in (trino_root, opa_root):
        assert stat.S_IMODE(root.stat().st_mode) == 0o700, root
    private = [
        Path(cluster.trino.files["passwords"]),
        *(trino_root / "etc").rglob("*"),
        *(opa_root / "tls").iterdir(),
        opa_root / "authz.rego",
    ]
    for path in private:
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    password_db = (trino_root / "etc" / "password.db").read_text()
    texts = {
        "trino log": Path(cluster.trino.log).read_text(errors="replace"),
        "opa log": Path(cluster.opa.log).read_text(errors="replace"),
        "trino command line": Path(f"/proc/{cluster.trino.pid}/cmdline").read_bytes().decode(),
        "opa command line": Path(f"/proc/{cluster.opa.pid}/cmdline").read_bytes().decode(),
        "trino properties": "".join(p.read_text() for p in (trino_root / "etc").rglob("*.properties")),
        "password hashes": password_db,
    }
    assert "SERVER STARTED" in texts["trino log"]
    for what, secret in cluster.secrets.items():
        assert len(secret) >= 16
        for where, text in texts.items():
            assert secret not in text, f"the {what} appears in the {where}"
    assert all(line.split(":", 1)[1].count(":") == 2 for line in password_db.splitlines())  # PBKDF2 entries


@pytest.mark.integration
def test_the_trino_cli_on_java_17_connects_over_tls_with_the_password_from_the_environment(
    cluster: Cluster,
) -> None:
    cli = _layouts()["trino"].tools["trino-cli"]
    java = find_java(17, purpose="trino-cli").java

    def run(password: str) -> subprocess.CompletedProcess[str]:
        environment = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
        environment["TRINO_PASSWORD"] = password
        return subprocess.run(
            [
                str(java),
                "-jar",
                str(cli),
                "--server",
                cluster.url,
                "--user",
                "dana",
                "--password",
                "--truststore-path",
                str(cluster.ca),
                "--execute",
                "select count(*) from iceberg.gold.dim_customer",
            ],
            capture_output=True,
            text=True,
            env=environment,
            timeout=120,
        )

    answered = run(cluster.passwords["dana"])
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert answered.stdout.strip() == '"2"'
    refused = run("wrong")
    assert refused.returncode != 0
    assert "Authentication failed: Access Denied: Invalid credentials" in refused.stderr, refused.stderr[
        -2000:
    ]


@pytest.mark.integration
def test_stop_leaves_no_process(cluster: Cluster) -> None:
    """Last in the module: stops the shared servers (the fixture's own stop is then a no-op)."""
    for server in (cluster.trino, cluster.opa):
        assert server.alive()
        server.stop()
        assert not server.alive()
        with pytest.raises(ProcessLookupError):  # nothing left in its process group either
            os.killpg(server.pid, 0)
