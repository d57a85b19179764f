"""The ``lakehouse`` command: one group, ``--output`` where results are printed, errors once, exit 1."""

from __future__ import annotations

import logging
import sys

import typer

from lakehouse.config import Settings
from lakehouse.errors import LakehouseError

from . import _data, _edge, _governance, _servers  # noqa: F401  (importing registers their commands)
from ._app import app, err


def main() -> None:
    import os

    from lakehouse.config import PRIVATE_UMASK, MaskingFormatter, mask_secrets

    def _masked(text: str) -> str:
        """``text`` with secrets masked: passwords in URLs, secret parameters, and the values of
        the environment's secret settings (when they can be read)."""
        try:
            known = Settings.load().secret_values()
        except Exception:  # the settings may be what failed: mask by shape alone
            known = []
        return mask_secrets(text, known)

    os.umask(PRIVATE_UMASK)  # what the platform writes (and the processes it starts) is private
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.setFormatter(MaskingFormatter("%(levelname)s %(name)s: %(message)s"))
    try:
        code = app(standalone_mode=False)  # returns the code of typer.Exit instead of exiting
    except LakehouseError as exc:
        err.print(f"[red]error:[/red] {_masked(str(exc))}", highlight=False)
        sys.exit(1)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        import traceback

        # an unexpected error: its traceback, with any secret it quotes (a URL) masked
        sys.stderr.write(_masked("".join(traceback.format_exception(exc))))
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
