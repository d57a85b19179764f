"""Nessie for the stack profile: the catalog, with its Iceberg REST endpoint at ``/iceberg``.

The locked ``nessie-quarkus`` runner jar runs on the oldest JDK 21+ found, its version store in
PostgreSQL (``JDBC2``, the ``nessie`` database and role, TLS verified against the stack's CA) and
its warehouse on SeaweedFS. Its configuration is ``<root>/config/application.properties`` (0600:
it holds the database password and the S3 key, which Quarkus reads from there and no command
line shows). Both its ports (API and management) listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Mapping
from pathlib import Path

from lakehouse.config import private_dir, write_private
from lakehouse.errors import ServerError

from ._artifacts import Layout, find_java
from ._postgres import jdbc_url, password
from ._process import free_port
from ._service import Running, launch, wait_ready

WAREHOUSE = "warehouse"  # the name Iceberg clients pass as their warehouse


def _properties(values: Mapping[str, str]) -> str:
    def escape(text: str) -> str:
        return text.replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:")

    lines = ["# written by lakehouse stack start; holds secrets: 0600"]
    lines += [f"{key}={escape(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def nessie_properties(
    *, http_port: int, management_port: int, postgres: Running, s3: Mapping[str, str]
) -> dict[str, str]:
    """Nessie's settings for the stack: loopback, JDBC on PostgreSQL, the warehouse on S3."""
    return {
        "quarkus.http.host": "127.0.0.1",
        "quarkus.http.port": str(http_port),
        "quarkus.management.host": "127.0.0.1",
        "quarkus.management.port": str(management_port),
        "quarkus.log.console.level": "INFO",
        "quarkus.http.access-log.enabled": "false",
        "nessie.version.store.type": "JDBC2",
        "nessie.version.store.persist.jdbc.datasource": "postgresql",
        "quarkus.datasource.postgresql.active": "true",
        "quarkus.datasource.postgresql.jdbc.url": jdbc_url(postgres, "nessie"),
        "quarkus.datasource.postgresql.username": "nessie",
        "quarkus.datasource.postgresql.password": password(postgres, "nessie"),
        "nessie.catalog.default-warehouse": WAREHOUSE,
        f"nessie.catalog.warehouses.{WAREHOUSE}.location": f"s3://{s3['bucket']}/",
        "nessie.catalog.service.s3.default-options.endpoint": s3["endpoint"],
        "nessie.catalog.service.s3.default-options.path-style-access": "true",
        "nessie.catalog.service.s3.default-options.region": s3["region"],
        "nessie.catalog.service.s3.default-options.access-key": "urn:nessie-secret:quarkus:lakehouse.s3",
        "lakehouse.s3.name": s3["access_key_id"],
        "lakehouse.s3.secret": s3["secret_access_key"],
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
    write_private(
        config / "application.properties",
        _properties(
            nessie_properties(http_port=http_port, management_port=management_port, postgres=postgres, s3=s3)
        ),
    )
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
        env={"PATH": os.environ.get("PATH", ""), "HOME": str(root), "LANG": "C.UTF-8"},
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
