"""The ``lakehouse`` command."""

from __future__ import annotations

from ._app import app
from ._main import main

__all__ = ["app", "main"]
