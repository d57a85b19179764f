"""Running dbt on the project's dbt/, with the platform's settings (and the project) in its environment."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lakehouse.config import (
    PRIVATE_UMASK,
    PROJECT_ENV,
    Settings,
    apply_stack_state,
    private_dir,
    private_home,
    project_of,
    scratch_dir,
    trino_login,
)
from lakehouse.errors import TransformError

HELD_ENV = "LAKEHOUSE_DBT_HELD"  # set: dbt prepares, then runs on a line "go" on stdin (``_dbt_main``)

STOP_GRACE_S = 30.0  # after SIGTERM, dbt gets this long to cancel its queries before SIGKILL


def dbt_env(settings: Settings, target: str = "local") -> dict[str, str]:
    """dbt's environment: the platform's plugin in dbt's process reads its settings from it,
    and the project by its absolute path (the same one this process resolved)."""
    env = dict(os.environ)
    env.update(
        {
            PROJECT_ENV: str(project_of(settings).root),
            "LAKEHOUSE_HOME": str(settings.home),
            "LAKEHOUSE_PROFILE": settings.profile,
            "LAKEHOUSE_DBT_TARGET": target,
            "DBT_TARGET_PATH": str(settings.home / "dbt" / target / "target"),
            "DBT_LOG_PATH": str(settings.home / "dbt" / target / "logs"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DBT_PARTIAL_PARSE": "true",
        }
    )
    # The project and its profiles by dbt's own environment variables, not options: every dbt
    # subcommand that takes --project-dir/--profiles-dir reads them, the group's own options
    # (`--version`, `--help`) are left alone, and a user's explicit option still wins.
    directory = str(project_of(settings).dbt_project_dir())
    env["DBT_PROJECT_DIR"] = directory
    env["DBT_PROFILES_DIR"] = directory
    if target == "trino":
        env.update(trino_env(settings))
    return env


def trino_env(settings: Settings) -> dict[str, str]:
    """profiles.yml's ``trino`` target from the engine settings: HTTPS (the CA verified) as the
    operator account (``engine.trino_user``), which builds the layers; a variable the caller
    set wins, as with every dbt setting. The password reaches dbt in its environment only."""
    if settings.profile == "stack":
        settings = apply_stack_state(settings)
    cfg = settings.engine
    env = {
        "TRINO_HOST": cfg.trino_host,
        "TRINO_PORT": str(cfg.trino_port),
        "TRINO_CATALOG": cfg.trino_catalog,
        **({"TRINO_CA_FILE": str(cfg.trino_ca_file)} if cfg.trino_ca_file else {}),
    }
    if cfg.trino_password is not None or cfg.trino_passwords_file is not None:
        _, principal, password = trino_login(settings)
        env.update({"TRINO_AUTH_METHOD": "ldap", "TRINO_USER": principal, "TRINO_PASSWORD": password})
    env = {k: v for k, v in env.items() if k not in os.environ}
    if "TRINO_CA_FILE" in env:
        # requests lets REQUESTS_CA_BUNDLE (or CURL_CA_BUNDLE) override the CA dbt-trino sets on its
        # session: in dbt's process, Trino's CA is the bundle
        env["REQUESTS_CA_BUNDLE"] = env["CURL_CA_BUNDLE"] = env["TRINO_CA_FILE"]
    return env


# dbt's subcommands (dbt-core 1.11): the first argument that names one is the command; the
# arguments before it are the group's options (`--log-level warn build` runs `build`).
SUBCOMMANDS = frozenset(
    {
        "build",
        "clean",
        "clone",
        "compile",
        "debug",
        "deps",
        "docs",
        "init",
        "list",
        "ls",
        "parse",
        "retry",
        "run",
        "run-operation",
        "seed",
        "show",
        "snapshot",
        "source",
        "test",
    }
)


def subcommand(args: list[str]) -> str | None:
    """The dbt subcommand ``args`` run, if any (``dbt --version`` runs none)."""
    return next((a for a in args if a in SUBCOMMANDS), None)


def target_of(args: list[str]) -> str | None:
    """The target ``args`` name with ``--target X``, ``--target=X``, ``-t X`` or ``-tX``."""
    for i, arg in enumerate(args):
        if arg in ("--target", "-t") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--target="):
            return arg.split("=", 1)[1]
        if arg.startswith("-t") and not arg.startswith("--") and len(arg) > 2:
            return arg[2:]
    return None


def dbt_command(settings: Settings, args: list[str]) -> list[str]:
    """dbt's own command line (``_dbt_main``: dbt with the trino client's logging fixed), so
    dbt's options, help, version, log levels and usage errors are dbt's."""
    return [sys.executable, "-m", "lakehouse.transform._dbt_main", *args]


@contextmanager
def _staging_dir(settings: Settings, target: str) -> Iterator[Path]:
    """A private directory for this run's staged models, removed when the block ends.

    dbt keys its partial parsing on the profile, and the profile names this directory
    (``external_root``): a new directory per run made every run parse the whole project again
    (seconds). So a run uses the same directory as the run before it, ``dbt-staging/<target>``,
    held under an exclusive lock on the home's ``dbt/<target>`` directory (released when this
    process ends, however it ends); one left by a killed run is emptied first. A run that finds
    the lock held (another dbt run of this home and target) stages in a directory of its own and
    parses in full."""
    parent = settings.state_dir / "dbt-staging"
    private_dir(parent)
    held = private_dir(settings.home / "dbt" / target)
    lock = os.open(held, os.O_RDONLY)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with scratch_dir(parent, "run-") as own:
                yield own
            return
        stable = parent / target
        shutil.rmtree(stable, ignore_errors=True)  # left by a run that was killed
        stable.mkdir(mode=0o700)
        try:
            yield stable
        finally:
            shutil.rmtree(stable, ignore_errors=True)
    finally:
        os.close(lock)  # releases the lock


@contextmanager
def started_dbt(
    settings: Settings, args: list[str], *, target: str | None = None, held: bool = False
) -> Iterator[Callable[[], int]]:
    """Start dbt as ``run_dbt`` does and yield a function that waits for its exit code (raising
    ``TransformError`` past ``dbt.timeout``), so that the caller can do other work meanwhile.
    ``held``: dbt imports itself and parses the project at once, but runs ``args`` only when
    that function is called (the caller lands the data meanwhile). Leaving the block stops a
    dbt that still runs (SIGTERM, then SIGKILL) and removes its staging directory."""
    if target is None:
        engine = (apply_stack_state(settings) if settings.profile == "stack" else settings).engine
        target = target_of(args) or ("trino" if engine.type == "trino" else "local")
    command = subcommand(args)
    private_home(settings)
    private_dir(settings.home / "dbt")
    with _staging_dir(settings, target) as staging:
        env = dbt_env(settings, target)
        env["LAKEHOUSE_DBT_STAGING"] = str(staging)
        if command == "compile" and target == "trino":
            # Compiling SQL needs no server, but dbt first fills its relation cache with one
            # query per schema: without that, `dbt compile --target trino` works offline (CI,
            # a laptop). `--populate-cache` (or DBT_POPULATE_CACHE) still turns it on.
            env.setdefault("DBT_POPULATE_CACHE", "false")
        if held:
            env[HELD_ENV] = "1"
        deadline = time.monotonic() + settings.dbt.timeout
        with subprocess.Popen(
            dbt_command(settings, args),
            env=env,
            umask=PRIVATE_UMASK,
            stdin=subprocess.PIPE if held else None,
        ) as proc:

            def wait() -> int:
                if proc.stdin is not None and not proc.stdin.closed:
                    with contextlib.suppress(BrokenPipeError):  # dbt already ended: its code tells
                        proc.stdin.write(b"go\n")
                        proc.stdin.close()
                try:
                    return proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    _stop(proc)
                    name = " ".join(["dbt", *([command] if command else [])])
                    raise TransformError(
                        f"{name} ran past its time limit of {settings.dbt.timeout:g} s and was stopped; "
                        "raise dbt.timeout (LAKEHOUSE_DBT__TIMEOUT) or find the slow model in "
                        f"{env['DBT_LOG_PATH']}"
                    ) from None

            try:
                yield wait
            finally:  # done, failed or interrupted: dbt must not outlive us
                _stop(proc)


def run_dbt(settings: Settings, args: list[str], *, target: str | None = None) -> int:
    """Run dbt on the project's dbt/ with the platform's settings; returns dbt's exit code.

    dbt runs with umask 077 (its target, logs and staging files are its owner's only), and
    stages models in a private directory that is removed when dbt exits, even when it fails;
    one left by a killed run goes the next time dbt runs. A run longer than
    ``settings.dbt.timeout`` is stopped (SIGTERM, then SIGKILL) and ``TransformError`` raised:
    every model commits atomically, so a stopped run leaves each table as it was or as built."""
    with started_dbt(settings, args, target=target) as wait:
        return wait()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop our own dbt child by its handle: SIGTERM, then SIGKILL after a grace period."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
