"""The ``lakehouse`` command. ``main`` is the light entry point (``_entry``): the typer group
(``app``) and its commands are imported only when a command needs them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._entry import main

if TYPE_CHECKING:
    from ._app import app

__all__ = ["app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        from . import _main  # noqa: F401  (importing it registers every command on the group)
        from ._app import app

        return app
    raise AttributeError(f"module 'lakehouse.cli' has no attribute {name!r}")
