"""dbt's own command line, as ``lakehouse dbt`` runs it: ``python -m lakehouse.transform._dbt_main ARGS``.

It is dbt's ``cli`` with one fix: the trino client sets its logger to INFO when imported, and
dbt's telemetry library configures the root logger when imported, so the client's INFO lines
("keyring module not found", "failed after 3 attempts") reached stderr whatever dbt's
``--log-level``, ``--quiet`` or ``--debug`` said. Its logger now follows the root logger (WARNING),
like every other library's; dbt's own log levels govern dbt's output.

With ``LAKEHOUSE_DBT_HELD`` set (``started_dbt(..., held=True)``) it imports dbt and parses the
project at once, and runs the command when the parent writes "go" to its stdin.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from ._dbt import HELD_ENV


def main() -> None:
    with contextlib.suppress(ImportError):  # without dbt-trino there is nothing to fix
        import trino.logging  # noqa: F401  (sets the "trino" logger's level when first imported)
    logging.getLogger("trino").setLevel(logging.NOTSET)
    if os.environ.get(HELD_ENV):
        sys.exit(_held(sys.argv[1:]))
    from dbt.cli.main import cli

    sys.exit(cli(prog_name="lakehouse dbt"))


def _held(args: list[str]) -> int:
    """Import dbt and parse the project now, run ``args`` once the parent says "go": the
    seconds both take are spent while the parent still lands the data the run reads. Parsing
    reads no table. Exit codes as dbt's: 0 success, 1 failures, 2 an error."""
    from dbt.cli.main import dbtRunner

    parsed = dbtRunner().invoke(["parse", "--quiet"])
    if sys.stdin.readline().strip() != "go":  # the parent gave up, or is gone
        return 1
    manifest = parsed.result if parsed.success else None  # else the run parses and reports
    done = dbtRunner(manifest=manifest).invoke(args)  # type: ignore[arg-type]
    if done.success:
        return 0
    return 2 if done.exception is not None else 1


if __name__ == "__main__":
    main()
