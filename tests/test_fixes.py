"""Bugs found on the way, each pinned by a test that fails without its fix."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

import lakehouse.local
import lakehouse.reference
from lakehouse.cli import app


def test_produce_passes_scale_to_the_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def publish(bootstrap: str, topic: str, **kwargs: Any) -> int:
        seen.update(kwargs)
        return int(kwargs["count"])

    monkeypatch.setattr(lakehouse.reference, "produce", publish)
    monkeypatch.setattr(lakehouse.local, "bootstrap_servers", lambda _settings: "127.0.0.1:9")
    result = CliRunner().invoke(app, ["produce", "--topic", "orders", "--count", "3", "--scale", "0.15"])
    assert result.exit_code == 0, result.output
    assert seen["scale"] == 0.15
