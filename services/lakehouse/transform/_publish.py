"""Write-audit-publish on Nessie: dbt builds and tests on a branch, and only a green build is
merged into ``main``.

``build_and_publish`` makes the branch ``dbt.wap_branch`` afresh at ``main``'s head, runs
``dbt build`` on Trino's catalog for that branch (``engine.trino_wap_catalog``: the same Nessie
warehouse, seen at the branch), and merges the branch into ``main`` only if every model and
every test passed. The merge is one Nessie commit: readers of ``main`` see the old layers or all
the new ones, never a mix; a failing build leaves ``main`` exactly as it was (the branch stays,
for inspection, until the next build). Sources are read on the branch too: the build and its
tests see one consistent bronze, whatever lands on ``main`` meanwhile.
"""

from __future__ import annotations

import fcntl
import json
import logging
from dataclasses import dataclass

from lakehouse.catalog import Nessie
from lakehouse.config import Settings, apply_stack_state, private_dir
from lakehouse.errors import ConfigurationError

from ._dbt import run_dbt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    """What a write-audit-publish build did."""

    branch: str
    code: int  # dbt's exit code: 0 when every model and test passed
    main_before: str  # main's head when the branch was made
    main_after: str | None  # main's head after the merge; None: nothing was published
    failures: tuple[str, ...] = ()  # the models and tests that failed or errored (dbt's run results)

    @property
    def published(self) -> bool:
        return self.main_after is not None


def build_and_publish(settings: Settings, args: list[str] | None = None) -> Published:
    """``dbt build`` (with ``args``) on a fresh Nessie branch, merged into ``main`` when green.

    One build at a time per home (an exclusive lock): two builds would reset each other's branch.
    ``ConfigurationError`` when the catalog is not Nessie or the engine not Trino;
    ``CatalogConflict`` when ``main`` changed a table the build also wrote (nothing published)."""
    if settings.profile == "stack":
        settings = apply_stack_state(settings)
    if not settings.catalog.nessie_api:
        raise ConfigurationError(
            "write-audit-publish builds on a Nessie branch: run the stack's Nessie and Trino "
            "(`lakehouse stack start`), or set LAKEHOUSE_CATALOG__NESSIE_API"
        )
    if settings.engine.type != "trino":
        raise ConfigurationError(
            "write-audit-publish builds on Trino (its catalog on the branch): run the stack's Trino "
            "(`lakehouse stack start`), or set LAKEHOUSE_ENGINE__TYPE=trino"
        )
    nessie = Nessie(settings.catalog.nessie_api)
    on_branch = settings.model_copy(deep=True)
    on_branch.engine.trino_catalog = settings.engine.trino_wap_catalog
    with open(private_dir(settings.state_dir) / "publish.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        branch, main = nessie.fresh_branch(settings.dbt.wap_branch)
        logger.info("building on Nessie branch %s (main at %s)", branch.name, main.hash[:12])
        code = run_dbt(on_branch, ["build", *(args or [])], target="trino")
        if code != 0:
            return Published(branch.name, code, main.hash, None, _failures(settings))
        built = nessie.branch(branch.name)
        head = nessie.branch("main")
        assert built is not None and head is not None
        merged = nessie.merge(built, head, message=f"publish the dbt build of branch {branch.name}")
        return Published(branch.name, code, main.hash, merged.hash)


def _failures(settings: Settings) -> tuple[str, ...]:
    """The nodes dbt's last trino run reports as failed or errored (its ``run_results.json``)."""
    results = settings.home / "dbt" / "trino" / "target" / "run_results.json"
    try:
        report = json.loads(results.read_text())
    except (OSError, ValueError):
        return ()
    return tuple(
        _node_name(str(result.get("unique_id", "")))
        for result in report.get("results", [])
        if result.get("status") in ("fail", "error")
    )


def _node_name(unique_id: str) -> str:
    """``model.lakehouse.stg_regions`` -> ``stg_regions``; ``test.lakehouse.<name>.<hash>`` ->
    the test's name; ``unit_test.lakehouse.<model>.<name>`` -> ``<model>.<name>``."""
    parts = unique_id.split(".")
    if parts[0] == "unit_test":
        return ".".join(parts[2:])
    return parts[2] if len(parts) > 2 else unique_id
