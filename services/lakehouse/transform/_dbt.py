"""Running dbt on the project's dbt/, with the platform's settings (and the project) in its environment."""

from __future__ import annotations

import os
import subprocess
import sys

from lakehouse.config import (
    PRIVATE_UMASK,
    PROJECT_ENV,
    Settings,
    private_dir,
    private_home,
    project_of,
    scratch_dir,
)
from lakehouse.errors import TransformError

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


def run_dbt(settings: Settings, args: list[str], *, target: str | None = None) -> int:
    """Run dbt on the project's dbt/ with the platform's settings; returns dbt's exit code.

    dbt runs with umask 077 (its target, logs and staging files are its owner's only), and
    stages models in a private directory of this run that is removed when dbt exits, even when
    it fails; one left by a killed run goes the next time dbt runs. A run longer than
    ``settings.dbt.timeout`` is stopped (SIGTERM, then SIGKILL) and ``TransformError`` raised:
    every model commits atomically, so a stopped run leaves each table as it was or as built."""
    if target is None:
        target = target_of(args) or ("trino" if settings.engine.type == "trino" else "local")
    command = subcommand(args)
    private_home(settings)
    private_dir(settings.home / "dbt")
    with scratch_dir(settings.state_dir / "dbt-staging", "run-") as staging:
        env = dbt_env(settings, target)
        env["LAKEHOUSE_DBT_STAGING"] = str(staging)
        if command == "compile" and target == "trino":
            # Compiling SQL needs no server, but dbt first fills its relation cache with one
            # query per schema: without that, `dbt compile --target trino` works offline (CI,
            # a laptop). `--populate-cache` (or DBT_POPULATE_CACHE) still turns it on.
            env.setdefault("DBT_POPULATE_CACHE", "false")
        with subprocess.Popen(dbt_command(settings, args), env=env, umask=PRIVATE_UMASK) as proc:
            try:
                return proc.wait(timeout=settings.dbt.timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                name = " ".join(["dbt", *([command] if command else [])])
                raise TransformError(
                    f"{name} ran past its time limit of {settings.dbt.timeout:g} s and was stopped; "
                    "raise dbt.timeout (LAKEHOUSE_DBT__TIMEOUT) or find the slow model in "
                    f"{env['DBT_LOG_PATH']}"
                ) from None
            except BaseException:  # interrupted: dbt must not outlive us
                _stop(proc)
                raise


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
