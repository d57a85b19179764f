"""Who Trino's ``pii_decrypt`` decrypts for: the compiled policy's ``trino/pii_readers.json``.
Trino checks no access on a plugin's functions, so the trino-pii plugin decrypts only for the
session users in this list; it must name exactly the users the policy shows personal data in
clear, and nobody else."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from lakehouse.governance import OPERATORS, write_compiled
from lakehouse.governance._compile import PII_READERS_FILE, pii_readers, table_schemas
from lakehouse.governance._policy import Policy, Principal, load_policy
from lakehouse.local._trino import ENV_PII_READERS_FILE, PiiFiles

from .conftest import REPO

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def schemas() -> dict[str, list[str]]:
    return table_schemas()


@pytest.fixture(scope="module")
def policy(schemas: dict[str, list[str]]) -> Policy:
    return load_policy(REPO / "policies", schemas)


def _shown_in_clear(policy: Policy, schemas: dict[str, list[str]]) -> list[str]:
    """The users whose decision on some table decrypts a column: what the masks give them."""
    return sorted(
        user
        for user in policy.principals
        if any("decrypt" in policy.decide(user, t, cols).masks.values() for t, cols in schemas.items())
    )


def test_the_readers_are_the_users_the_policy_shows_personal_data_in_clear(
    policy: Policy, schemas: dict[str, list[str]]
) -> None:
    readers = pii_readers(policy)
    assert readers == _shown_in_clear(policy, schemas)
    assert readers == ["carol"]  # the reference policy: the compliance officer alone
    assert not {"dana", "sam", "alice", "svc-ml", "admin", *OPERATORS} & set(readers)


def test_write_compiled_puts_the_readers_next_to_the_opa_bundle(
    policy: Policy, schemas: dict[str, list[str]], tmp_path: Path
) -> None:
    written = write_compiled(policy, schemas, tmp_path)
    assert tmp_path / PII_READERS_FILE in written
    assert json.loads((tmp_path / "trino" / "pii_readers.json").read_text()) == pii_readers(policy)
    assert sorted(p.name for p in (tmp_path / "trino").iterdir()) == ["pii_readers.json"]  # no partial left


def test_a_clearance_granted_to_more_users_makes_them_readers(
    policy: Policy, schemas: dict[str, list[str]]
) -> None:
    carol = policy.principal("carol")
    more = dataclasses.replace(
        policy,
        principals={
            **policy.principals,
            "erin": Principal("erin", carol.roles, {}, carol.clearances),
            "dana": dataclasses.replace(policy.principal("dana"), clearances=frozenset({"pii"})),
        },
    )
    assert pii_readers(more) == ["carol", "dana", "erin"] == _shown_in_clear(more, schemas)


def test_a_clearance_of_data_stored_in_clear_makes_nobody_a_reader(
    policy: Policy, schemas: dict[str, list[str]]
) -> None:
    """Only an encrypted class needs the function: clearance of a plain class is no reason to
    let its holders decrypt."""
    plain = dataclasses.replace(
        policy, sensitive={name: {**spec, "encrypted": False} for name, spec in policy.sensitive.items()}
    )
    assert pii_readers(plain) == [] == _shown_in_clear(plain, schemas)


def test_trino_gets_the_readers_file_in_the_variable_the_plugin_reads(tmp_path: Path) -> None:
    files = PiiFiles(tmp_path / "keystore.json", tmp_path / "master.key", tmp_path / "pii_readers.json")
    assert files.environment()[ENV_PII_READERS_FILE] == str(tmp_path / "pii_readers.json")
    java = (REPO / "services/trino-pii/src/main/java/io/lakehouse/trino/pii/PiiReaders.java").read_text()
    assert f'public static final String ENV = "{ENV_PII_READERS_FILE}";' in java
