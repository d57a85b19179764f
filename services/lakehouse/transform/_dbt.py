"""Running dbt on the project's dbt/, with the platform's settings (and the project) in its environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
    return env


def dbt_command(settings: Settings, args: list[str]) -> list[str]:
    directory = project_of(settings).dbt_project_dir()
    executable = Path(sys.executable).parent / "dbt"
    return [str(executable), *args, "--project-dir", str(directory), "--profiles-dir", str(directory)]


def run_dbt(settings: Settings, args: list[str], *, target: str | None = None) -> int:
    """Run dbt on the project's dbt/ with the platform's settings; returns dbt's exit code.

    dbt runs with umask 077 (its target, logs and staging files are its owner's only), and
    stages models in a private directory of this run that is removed when dbt exits, even when
    it fails; one left by a killed run goes the next time dbt runs. A run longer than
    ``settings.dbt.timeout`` is stopped (SIGTERM, then SIGKILL) and ``TransformError`` raised:
    every model commits atomically, so a stopped run leaves each table as it was or as built."""
    if target is None:
        target = "trino" if settings.engine.type == "trino" else "local"
        if "--target" in args:
            target = args[args.index("--target") + 1]
    private_home(settings)
    private_dir(settings.home / "dbt")
    with scratch_dir(settings.state_dir / "dbt-staging", "run-") as staging:
        env = dbt_env(settings, target)
        env["LAKEHOUSE_DBT_STAGING"] = str(staging)
        with subprocess.Popen(dbt_command(settings, args), env=env, umask=PRIVATE_UMASK) as proc:
            try:
                return proc.wait(timeout=settings.dbt.timeout)
            except subprocess.TimeoutExpired:
                _stop(proc)
                raise TransformError(
                    f"{' '.join(['dbt', *args[:1]])} ran past its time limit of {settings.dbt.timeout:g} s and "
                    f"was stopped; raise dbt.timeout (LAKEHOUSE_DBT__TIMEOUT) or find the slow model in "
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
