"""The ``lakehouse`` command: one group, ``--output`` where results are printed, errors once, exit 1."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer
from rich.markup import escape

from lakehouse.config import Settings
from lakehouse.errors import LakehouseError

from . import _data, _dead_letters, _edge, _governance, _servers, _sql  # noqa: F401  (importing registers their commands)
from ._app import app, err

DEBUG_ENV = "LAKEHOUSE_DEBUG"


def main() -> None:
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
    args = sys.argv[1:]
    debug = bool(os.environ.get(DEBUG_ENV))
    if args[:1] == ["--debug"]:  # only before the command: `lakehouse dbt --debug` is dbt's own flag
        debug, args = True, args[1:]
    try:
        code = app(args=args, prog_name="lakehouse", standalone_mode=False)
    except LakehouseError as exc:
        if debug:
            _print_traceback(exc, _masked)
        err.print(f"[red]error:[/red] {escape(_masked(str(exc)))}", highlight=False)
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err.print("aborted", highlight=False)
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer's own (vendored) click exceptions
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(f"error: {exc}", highlight=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except Exception as exc:
        # not one of ours: one line naming it, the traceback only when asked for (secrets masked)
        if debug:
            _print_traceback(exc, _masked)
        where = _where(exc)
        err.print(
            f"[red]error:[/red] {escape(_masked(f'{type(exc).__name__}: {exc}') + where)}\n"
            f"This is unexpected: rerun with --debug (or {DEBUG_ENV}=1) for the traceback, and report it.",
            highlight=False,
        )
        sys.exit(1)
    if isinstance(code, int) and code:
        sys.exit(code)


def _print_traceback(exc: BaseException, masked: Callable[[str], str]) -> None:
    import traceback

    sys.stderr.write(masked("".join(traceback.format_exception(exc))))


def _where(exc: BaseException) -> str:
    """`` (at module.py:LINE)``: the innermost frame of the traceback, for the report."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return ""
    return f" (at {Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno})"


if __name__ == "__main__":
    main()
