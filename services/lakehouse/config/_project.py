"""The user's project: a directory holding ``contracts/``, ``dbt/`` and ``policies/``.

The platform package holds no user data declarations (only its own tables' contracts): every
source table is declared in the project's ``contracts/*.yml``, the dbt project is ``dbt/`` and
the access policies are ``policies/``. The project is ``Settings.project_dir``
(``LAKEHOUSE_PROJECT_DIR``), else the nearest directory, from the current one upwards, that
looks like a project (a ``contracts/`` directory with ``*.yml`` files): a checkout of this
repository is the reference retailer's project, so ``make demo`` and ``make test`` run from its
root need no setting. Nothing is resolved relative to the installed package, so the same rules
hold in a container image (mount the project and set ``LAKEHOUSE_PROJECT_DIR``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.errors import ConfigurationError

if TYPE_CHECKING:
    from ._settings import Settings


PROJECT_ENV = "LAKEHOUSE_PROJECT_DIR"


@dataclass(frozen=True)
class Project:
    """Where one project's declarations live (paths only: reading them is the readers' work)."""

    root: Path

    @property
    def contracts_dir(self) -> Path:
        """Source table contracts: every ``*.yml`` in it."""
        return self.root / "contracts"

    @property
    def dbt_dir(self) -> Path:
        """The dbt project (``dbt_project.yml``, ``profiles.yml``, ``models/``)."""
        return self.root / "dbt"

    @property
    def policies_dir(self) -> Path:
        """Access policies: ``principals.yml`` and ``access.yml``."""
        return self.root / "policies"

    def contract_files(self) -> list[Path]:
        """The project's contract files, in name order."""
        return sorted(p for p in self.contracts_dir.glob("*.yml") if p.is_file())

    def dbt_project_dir(self) -> Path:
        """The dbt project directory, checked to hold a dbt project."""
        if not (self.dbt_dir / "dbt_project.yml").is_file():
            raise ConfigurationError(
                f"no dbt project at {self.dbt_dir} (no dbt_project.yml): add one to the project "
                f"or point {PROJECT_ENV} at a project that has dbt/"
            )
        return self.dbt_dir


def _looks_like_project(directory: Path) -> bool:
    contracts = directory / "contracts"
    return contracts.is_dir() and any(p.is_file() for p in contracts.glob("*.yml"))


def _foreign(directory: Path) -> str | None:
    """Why a project found by walking up may have been put there, or changed, by someone else
    (its contracts decide what is encrypted, its policies who sees what), or None."""
    declarations = [directory / "contracts", directory / "policies"]
    present = [d for d in declarations if d.is_dir()]
    for path in (directory, *present, *(f for d in present for f in sorted(d.glob("*.yml")))):
        info = path.stat()
        if info.st_uid not in (os.getuid(), 0):
            return f"{path} belongs to another user"
        if info.st_mode & 0o002:
            return f"{path} is writable by every user"
    return None


def find_project(configured: Path | None = None, *, start: Path | None = None) -> Project:
    """The project at ``configured``, else the nearest one from ``start`` (default: the current
    directory) upwards, if it is this user's (or root's) and not writable by every user (a
    contracts/ planted above the current directory, in /tmp say, is not taken). Raises
    ConfigurationError naming ``LAKEHOUSE_PROJECT_DIR`` when there is none."""
    if configured is not None:
        root = configured.expanduser().absolute()
        if not root.is_dir():
            raise ConfigurationError(
                f"{PROJECT_ENV}={configured} is not a directory: point it at your project "
                "(a directory holding contracts/, dbt/ and policies/)"
            )
        if not _looks_like_project(root):
            raise ConfigurationError(
                f"{PROJECT_ENV}={configured} is not a project: it has no contracts/*.yml; "
                "declare your source tables there (see the README, 'Your own project')"
            )
        return Project(root)
    here = (start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        if _looks_like_project(directory):
            problem = _foreign(directory)
            if problem is not None:
                raise ConfigurationError(
                    f"not using the project found at {directory}: {problem}; "
                    f"set {PROJECT_ENV} to your project directory"
                )
            return Project(directory)
    raise ConfigurationError(
        f"no project in {here} or above it (a directory holding contracts/*.yml): "
        f"set {PROJECT_ENV} to your project directory"
    )


def project_of(settings: Settings) -> Project:
    """The project ``settings`` name (``project_dir``), else the one found from the current directory."""
    return find_project(settings.project_dir)


def environment_project() -> Project:
    """The project of this process's environment: ``LAKEHOUSE_PROJECT_DIR``, else found from the
    current directory (what a ``lakehouse`` command, and dbt's process under ``lakehouse dbt``, use)."""
    configured = os.environ.get(PROJECT_ENV)
    return find_project(Path(configured) if configured else None)
