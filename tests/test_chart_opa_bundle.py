"""The chart's OPA bundle (``charts/lakehouse/files/opa``, read by the OPA ConfigMap) is exactly
what the platform's compiler makes of ``policies/``: regenerated here, it must equal the
committed files byte for byte, so the chart cannot drift from the policies. After changing
``policies/``, the contracts or the dbt models, run
``lakehouse policy bundle --out charts/lakehouse/files/opa`` and commit the result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lakehouse.config import find_project
from lakehouse.governance import (
    OPA_BUNDLE_FILES,
    OPA_CLIENT_IDENTITY,
    PII_READERS_BESIDE_BUNDLE,
    load_policy,
    table_schemas,
    write_compiled,
    write_opa_bundle,
)

from .conftest import REPO

COMMITTED = REPO / "charts" / "lakehouse" / "files" / "opa"
CHART_FILES = (*OPA_BUNDLE_FILES, PII_READERS_BESIDE_BUNDLE)
REGENERATE = "run `lakehouse policy bundle --out charts/lakehouse/files/opa` and commit the result"


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = find_project(REPO)
    schemas = table_schemas(project)
    out = tmp_path_factory.mktemp("bundle") / "opa"
    write_opa_bundle(load_policy(project.policies_dir, schemas), schemas, out)
    return out


@pytest.mark.unit
def test_the_chart_holds_exactly_the_bundle_files() -> None:
    assert sorted(p.name for p in COMMITTED.iterdir()) == sorted(CHART_FILES), REGENERATE


@pytest.mark.unit
@pytest.mark.parametrize("name", CHART_FILES)
def test_the_committed_bundle_is_what_policies_compile_to(regenerated: Path, name: str) -> None:
    assert (COMMITTED / name).read_bytes() == (regenerated / name).read_bytes(), f"{name}: {REGENERATE}"


@pytest.mark.unit
def test_the_bundle_is_what_the_stack_profiles_opa_loads(regenerated: Path, tmp_path: Path) -> None:
    """The policy module and data are the bytes `lakehouse policy compile` (the stack's OPA) writes."""
    project = find_project(REPO)
    schemas = table_schemas(project)
    write_compiled(load_policy(project.policies_dir, schemas), schemas, tmp_path)
    for name in ("lakehouse.rego", "data.json"):
        assert (tmp_path / "opa" / name).read_bytes() == (regenerated / name).read_bytes()


@pytest.mark.unit
def test_the_charts_decrypt_readers_are_the_policys(regenerated: Path, tmp_path: Path) -> None:
    """Trino's pii_decrypt in the chart decrypts for exactly the users it does in the stack."""
    project = find_project(REPO)
    schemas = table_schemas(project)
    write_compiled(load_policy(project.policies_dir, schemas), schemas, tmp_path)
    stack = json.loads((tmp_path / "trino" / "pii_readers.json").read_text())
    assert json.loads((COMMITTED / PII_READERS_BESIDE_BUNDLE).read_text()) == stack
    assert stack, "the reference policy clears someone for personal data"


@pytest.mark.unit
def test_opa_admits_only_trinos_certificate_to_post_decisions() -> None:
    authz = (COMMITTED / "authz.rego").read_text()
    assert "package system.authz" in authz and "default allow := false" in authz
    assert f'input.identity == "{OPA_CLIENT_IDENTITY}"' in authz and 'input.method == "POST"' in authz
