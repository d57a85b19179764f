"""Operator actions are audited by the platform, not by the CLI: a script calling the Python API
leaves the same records as `lakehouse devices ...`, `lakehouse gateway rotate-keys` and
`lakehouse keys rotate`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse import Lakehouse, RegistryError, Settings
from lakehouse.ingest.edge import (
    issue_enrollment_token,
    paths,
    revoke_device,
    rotate_gateway_keys,
)
from lakehouse.privacy import rotate_keys

pytestmark = pytest.mark.unit


def _audit(settings: Settings) -> list[dict]:
    return [json.loads(line) for line in paths(settings).audit.read_text().splitlines()]


def test_enrollment_revocation_and_gateway_key_rotation_through_the_api_are_audited(
    home: Path, reference_files: dict[str, Path]
) -> None:
    settings = Settings(home=home)
    with Lakehouse(settings) as lh:
        for name in ("stores", "devices"):
            lh.load(f"bronze.{name}", [reference_files[name]])
        store = lh.sql("select min(store_id) from bronze.stores").column(0)[0].as_py()

    token, _ = issue_enrollment_token(settings, store)
    with pytest.raises(RegistryError):
        issue_enrollment_token(settings, "NOPE-1")
    with pytest.raises(RegistryError):
        revoke_device(settings, "edge-unknown")
    rotated = rotate_gateway_keys(settings, signing=True, ingest=True)

    records = [(r["event"], r["outcome"]) for r in _audit(settings)]
    assert records == [
        ("enrollment-token", "ok"),
        ("enrollment-token", "rejected"),
        ("revoke", "rejected"),
        ("rotate-keys", "ok"),
        ("rotate-keys", "ok"),
    ]
    assert [kind for kind, _ in rotated] == ["signing", "ingest"]
    assert token not in paths(settings).audit.read_text()  # the token itself is never logged


def test_key_rotation_through_the_api_is_recorded_in_the_key_log(home: Path) -> None:
    with Lakehouse(Settings(home=home)) as lh:
        lh.keystore.encrypt("C1", "email", "c1@example.com")
        done = rotate_keys(lh.catalog, lh.keystore)
        log = lh.sql("select operation, detail from audit.key_log").to_pylist()
    assert [row["operation"] for row in log] == ["rotate"]
    assert json.loads(log[0]["detail"]) == done
    assert done["from"] != done["to"]
