"""dbt's own command line, as ``lakehouse dbt`` runs it: ``python -m lakehouse.transform._dbt_main ARGS``.

It is dbt's ``cli`` with one fix: the trino client sets its logger to INFO when imported, and
dbt's telemetry library configures the root logger when imported, so the client's INFO lines
("keyring module not found", "failed after 3 attempts") reached stderr whatever dbt's
``--log-level``, ``--quiet`` or ``--debug`` said. Its logger now follows the root logger (WARNING),
like every other library's; dbt's own log levels govern dbt's output.
"""

from __future__ import annotations

import contextlib
import logging
import sys


def main() -> None:
    with contextlib.suppress(ImportError):  # without dbt-trino there is nothing to fix
        import trino.logging  # noqa: F401  (sets the "trino" logger's level when first imported)
    logging.getLogger("trino").setLevel(logging.NOTSET)
    from dbt.cli.main import cli

    sys.exit(cli(prog_name="lakehouse dbt"))


if __name__ == "__main__":
    main()
