"""Nessie for the stack profile: the catalog, with its Iceberg REST endpoint at ``/iceberg``.

The locked ``nessie-quarkus`` runner jar runs on the oldest JDK 21+ found, its version store in
PostgreSQL (``JDBC2``, the ``nessie`` database and role, TLS verified against the stack's CA) and
its warehouse on SeaweedFS. Its configuration ``<root>/config/application.properties`` is rendered
from the chart's template (``_config``); the database password and the S3 keys reach Quarkus in
the process's environment (``${NAME}`` in the file), which no command line shows. Both its
ports (API and management) listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from lakehouse.config import private_dir
from lakehouse.errors import ServerError

from ._artifacts import Layout, find_java
from ._config import write_config
from ._postgres import jdbc_url, password
from ._process import free_port
from ._service import Running, launch, wait_ready

WAREHOUSE = "warehouse"  # the name Iceberg clients pass as their warehouse


TEMPLATE = "nessie/application.properties"


def nessie_values(
    *, http_port: int, management_port: int, postgres: Running, s3: Mapping[str, str]
) -> dict[str, str]:
    """The values of Nessie's configuration template in the stack: loopback, JDBC on the
    stack's PostgreSQL (TLS verified), the warehouse on SeaweedFS."""
    return {
        "http_host": "127.0.0.1",
        "http_port": str(http_port),
        "management_host": "127.0.0.1",
        "management_port": str(management_port),
        "jdbc_url": jdbc_url(postgres, "nessie"),
        "jdbc_user": "nessie",
        "warehouse": WAREHOUSE,
        "warehouse_location": f"s3://{s3['bucket']}/",
        "s3_endpoint": s3["endpoint"],
        "s3_region": s3["region"],
    }


def start_nessie(
    root: Path, *, layout: Layout, postgres: Running, s3: Mapping[str, str], timeout: float = 120.0
) -> Running:
    """Start Nessie; returns once its Iceberg REST endpoint serves the warehouse's config."""
    if layout.java is None or not layout.classpath:
        raise ServerError("the nessie layout has no runner jar: `lakehouse stack install --only nessie`")
    private_dir(root)
    taken: set[int] = set()
    http_port, management_port = free_port(taken), free_port(taken)
    config = private_dir(root / "config")
    write_config(
        config / "application.properties",
        TEMPLATE,
        nessie_values(http_port=http_port, management_port=management_port, postgres=postgres, s3=s3),
    )
    # the secrets the configuration references as ${NAME}: in the environment, never in a file
    secrets = {
        "NESSIE_JDBC_PASSWORD": password(postgres, "nessie"),
        "NESSIE_S3_ACCESS_KEY": s3["access_key_id"],
        "NESSIE_S3_SECRET_KEY": s3["secret_access_key"],
    }
    java = find_java(layout.java, purpose="nessie").java
    launched = launch(
        "Nessie",
        [
            str(java),
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-Djava.net.preferIPv4Stack=true",
            "-jar",
            str(layout.classpath[0]),
        ],
        cwd=root,
        log=root / "nessie.log",
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(root), "LANG": "C.UTF-8", **secrets},
    )
    base = f"http://127.0.0.1:{http_port}"
    endpoints = {
        "api": f"{base}/api/v2",
        "iceberg": f"{base}/iceberg",
        "management": f"http://127.0.0.1:{management_port}",
        "warehouse": WAREHOUSE,
    }
    wait_ready(launched, lambda: _serves_warehouse(endpoints["iceberg"]), timeout=timeout)
    return launched.running(endpoints, {"config": str(config / "application.properties")})


def _serves_warehouse(iceberg: str) -> bool:
    with urllib.request.urlopen(f"{iceberg}/v1/config?warehouse={WAREHOUSE}", timeout=5) as response:  # noqa: S310 - our loopback URL
        return bool(json.load(response).get("defaults") is not None)
