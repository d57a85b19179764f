"""PostgreSQL for the stack profile: Nessie's version store and the edge device registry.

The server is Debian's (``/usr/lib/postgresql/<v>/bin``; the ``pgserver`` wheel's build has no
SSL). It listens on 127.0.0.1
only, TLS with the stack's certificate (``hostssl`` is the only TCP rule in ``pg_hba.conf``), and
every login is SCRAM-SHA-256 with a password generated at first start: the superuser's, and one
per database owner (``nessie``, ``registry``), each owning only its database. The passwords live
in ``credentials.json`` (0600) beside the data.

PostgreSQL refuses to run as root. Run as root (a CI container), the server runs as ``nobody``
and its data lives in ``/var/lib/lakehouse/postgres/<hash of the home>`` (0700, ``nobody``'s),
because the platform's home is 0700 and stays so; otherwise the data is ``<root>/data``.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import pwd
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakehouse.config import alive, private_dir, read_json, write_private
from lakehouse.errors import ServerError

from ._process import free_port
from ._service import Launched, Running, launch, wait_ready

DATABASES = ("nessie", "registry")  # each owned by a role of the same name
ROOT_DATA = Path("/var/lib/lakehouse/postgres")
UNPRIVILEGED = "nobody"


def server_binaries() -> Path:
    """The directory of Debian's newest ``postgres`` and ``initdb`` (the pgserver wheel's build
    has no SSL, so it cannot serve the stack)."""
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if debian:
        return Path(debian[-1]).parent
    raise ServerError(
        "PostgreSQL is missing: install Debian's postgresql package (apt-get install postgresql)"
    )


@dataclass(frozen=True)
class _Owner:
    """Who runs the server: this user, or ``nobody`` when this user is root."""

    uid: int | None = None
    gid: int | None = None

    @classmethod
    def for_this_user(cls) -> _Owner:
        if os.geteuid() != 0:
            return cls()
        entry = pwd.getpwnam(UNPRIVILEGED)
        return cls(entry.pw_uid, entry.pw_gid)

    @property
    def dropped(self) -> bool:
        return self.uid is not None

    def give(self, path: Path) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(path, self.uid, self.gid)

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []} if self.dropped else {}


def _data_dir(root: Path, owner: _Owner) -> Path:
    if not owner.dropped:
        return root / "data"
    ROOT_DATA.mkdir(parents=True, exist_ok=True)
    for parent in (ROOT_DATA.parent, ROOT_DATA):  # traversable, not listable, by nobody
        os.chmod(parent, 0o711)  # noqa: S103 - execute only: no listing, no reading
    _remove_orphans()
    data = ROOT_DATA / hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    write_private(data.with_suffix(".owner"), str(root.resolve()))
    return data


def _remove_orphans() -> None:
    """Data directories outside the home whose home is gone (removed, ``make clean``, a test's
    temporary home) and whose server no longer runs: nothing can ever log in to them again."""
    for marker in ROOT_DATA.glob("*.owner"):
        data = marker.with_suffix("")
        with contextlib.suppress(OSError, ValueError):
            if (Path(marker.read_text().strip()) / "credentials.json").exists():
                continue
            pid_file = data / "postmaster.pid"
            if pid_file.exists() and alive(int(pid_file.read_text().split()[0])):
                continue
        shutil.rmtree(data, ignore_errors=True)
        marker.unlink(missing_ok=True)


def _run(args: list[str], owner: _Owner, log: Path, *, cwd: Path) -> None:
    import subprocess

    with open(log, "ab") as stream:
        done = subprocess.run(
            args, stdout=stream, stderr=subprocess.STDOUT, cwd=cwd, timeout=120, **owner.popen_kwargs()
        )
    if done.returncode != 0:
        from ._process import log_tail

        raise ServerError(f"{Path(args[0]).name} failed with {done.returncode}{log_tail(log)}")


def _init(data: Path, owner: _Owner, binaries: Path, passwords: dict[str, str], log: Path) -> None:
    if data.exists():  # left by a home of the same path that was removed: its passwords are gone
        shutil.rmtree(data)
    data.mkdir(mode=0o700, parents=True)
    owner.give(data)
    pwfile = data.parent / f".{data.name}.pw"
    write_private(pwfile, passwords["postgres"] + "\n")
    owner.give(pwfile)
    try:
        _run(
            [
                str(binaries / "initdb"),
                f"--pgdata={data}",
                "--username=postgres",
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ],
            owner,
            log,
            cwd=data.parent,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    # only TLS over loopback, SCRAM everywhere; the Unix socket (in the data dir) for nobody else
    (data / "pg_hba.conf").write_text(
        "# written by lakehouse stack start\n"
        "local   all  all                    scram-sha-256\n"
        "hostssl all  all  127.0.0.1/32      scram-sha-256\n"
    )


def _copy_tls(tls: tuple[Path, Path, Path], data: Path, owner: _Owner) -> tuple[Path, Path]:
    """The server's certificate and key, readable by the server's user (PostgreSQL wants the key
    0600 and owned by itself)."""
    _ca, cert, key = tls
    paths = (data / "server.crt", data / "server.key")
    for source, target in zip((cert, key), paths, strict=True):
        write_private(target, source.read_text())
        owner.give(target)
    return paths


def start_postgres(root: Path, *, tls: tuple[Path, Path, Path], timeout: float = 60.0) -> Running:
    """Start PostgreSQL for the stack (initialised, with its roles and databases, on first start);
    returns once a TLS login with the generated password answers ``select 1``."""
    private_dir(root)
    owner = _Owner.for_this_user()
    binaries = server_binaries()
    log = root / "postgres.log"
    credentials_file = root / "credentials.json"
    passwords: dict[str, str] = read_json(credentials_file) or {}
    data = _data_dir(root, owner)
    fresh = not passwords or not (data / "PG_VERSION").is_file()
    if fresh:
        passwords = {name: secrets.token_urlsafe(24) for name in ("postgres", *DATABASES)}
        write_private(credentials_file, json.dumps(passwords))
        _init(data, owner, binaries, passwords, log)
    cert, key = _copy_tls(tls, data, owner)
    port = free_port(set())
    launched = launch(
        "PostgreSQL",
        [
            str(binaries / "postgres"),
            "-D",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"port={port}",
            "-c",
            f"unix_socket_directories={data}",
            "-c",
            "ssl=on",
            "-c",
            f"ssl_cert_file={cert}",
            "-c",
            f"ssl_key_file={key}",
            "-c",
            "ssl_min_protocol_version=TLSv1.2",
            "-c",
            "password_encryption=scram-sha-256",
            "-c",
            "max_connections=50",
            "-c",
            "shared_buffers=64MB",
        ],
        cwd=data.parent,
        log=log,
        env={"PATH": os.environ.get("PATH", ""), "LANG": "C"},
        **owner.popen_kwargs(),
    )
    endpoint = {"host": "127.0.0.1", "port": str(port)}
    ca = str(tls[0])
    try:
        wait_ready(
            launched, lambda: _answers(endpoint, "postgres", passwords["postgres"], ca), timeout=timeout
        )
        if fresh:
            _create_databases(endpoint, passwords, ca)
    except BaseException:
        launched.stop()
        raise
    return _running(launched, endpoint, ca, credentials_file)


def _running(launched: Launched, endpoint: dict[str, str], ca: str, credentials: Path) -> Running:
    return launched.running(
        {"host": endpoint["host"], "port": endpoint["port"]}, {"ca": ca, "credentials": str(credentials)}
    )


def connect(
    endpoint: dict[str, str], user: str, password: str, ca: str, *, database: str = "postgres"
) -> Any:
    """A psycopg2 connection over TLS that verifies the server against the stack's CA."""
    import psycopg2

    return psycopg2.connect(
        host=endpoint["host"],
        port=int(endpoint["port"]),
        user=user,
        password=password,
        dbname=database,
        sslmode="verify-full",
        sslrootcert=ca,
        connect_timeout=5,
    )


def _answers(endpoint: dict[str, str], user: str, password: str, ca: str) -> bool:
    with (
        contextlib.closing(connect(endpoint, user, password, ca)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("select 1")
        return bool(cursor.fetchone() == (1,))


def _create_databases(endpoint: dict[str, str], passwords: dict[str, str], ca: str) -> None:
    """A role per database, owning it and nothing else; PUBLIC loses CONNECT and CREATE."""
    from psycopg2 import sql

    with contextlib.closing(connect(endpoint, "postgres", passwords["postgres"], ca)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            for name in DATABASES:
                cursor.execute(
                    sql.SQL("create role {} login password {}").format(
                        sql.Identifier(name), sql.Literal(passwords[name])
                    )
                )
                cursor.execute(
                    sql.SQL("create database {} owner {}").format(sql.Identifier(name), sql.Identifier(name))
                )
                cursor.execute(sql.SQL("revoke all on database {} from public").format(sql.Identifier(name)))
    for name in DATABASES:  # PostgreSQL 15+ already keeps PUBLIC out of schema public; 14- did not
        with contextlib.closing(connect(endpoint, "postgres", passwords["postgres"], ca, database=name)) as c:
            c.autocommit = True
            with c.cursor() as cursor:
                cursor.execute("revoke create on schema public from public")
                cursor.execute(sql.SQL("alter schema public owner to {}").format(sql.Identifier(name)))


def jdbc_url(running: Running, database: str) -> str:
    """The JDBC URL of ``database`` over TLS, verifying the server with the stack's CA."""
    endpoints = running.endpoints
    return (
        f"jdbc:postgresql://{endpoints['host']}:{endpoints['port']}/{database}"
        f"?sslmode=verify-full&sslrootcert={running.files['ca']}"
    )


def password(running: Running, user: str) -> str:
    return str((read_json(Path(running.files["credentials"])) or {})[user])
