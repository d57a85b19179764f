"""OPA's bundle: the files an OPA server loads to answer Trino's OPA plugin.

- ``lakehouse.rego``: the static Trino policy module (``governance/trino.rego``);
- ``data.json``: the data document compiled from ``policies/`` (``opa_data``);
- ``authz.rego``: OPA's ``system.authz``, admitting only Trino's client certificate, and only
  to POST the decision documents Trino's plugin asks for.

The stack profile's OPA (``lakehouse stack start``) and the chart's (``charts/lakehouse/files/opa``,
written by ``lakehouse policy bundle``) load the same files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ._compile import REGO_FILE, opa_data, pii_readers
from ._policy import Policy

POLICY_PACKAGE = ("lakehouse", "trino")


# Trino's OPA plugin settings -> the rule of ``governance/trino.rego`` each one queries
DECISIONS = {
    "allow": "allow",  # opa.policy.uri
    "batch": "batch",  # opa.policy.batched-uri
    "rowFilters": "rowFilters",  # opa.policy.row-filters-uri
    "batchColumnMasks": "batchColumnMasks",  # opa.policy.batch-column-masking-uri
}


OPA_CLIENT_NAME = "trino"  # the common name of the one client certificate OPA admits
OPA_CLIENT_IDENTITY = f"CN={OPA_CLIENT_NAME}"  # how OPA names it (the subject's RDN sequence)


OPA_BUNDLE_FILES = ("lakehouse.rego", "data.json", "authz.rego")  # what OPA loads
# Trino's pii_decrypt readers, written beside the bundle: the chart's Trino reads it from there
PII_READERS_BESIDE_BUNDLE = "pii_readers.json"


def decision_paths() -> dict[str, str]:
    """Each decision's URL path under OPA's data API (``/v1/data/lakehouse/trino/allow``, ...)."""
    return {name: "/v1/data/" + "/".join((*POLICY_PACKAGE, rule)) for name, rule in DECISIONS.items()}


def authz_policy(subject: str = OPA_CLIENT_IDENTITY) -> str:
    """OPA's ``system.authz``: ``subject`` (the client certificate's identity) may POST the
    decision documents Trino asks for; everything else (policy and data uploads, ad-hoc
    queries, other documents, /health) is refused."""
    paths = sorted(["v1", *path.strip("/").split("/")[1:]] for path in decision_paths().values())
    return (
        "package system.authz\n\n"
        "import rego.v1\n\n"
        "default allow := false\n\n"
        f"decisions := {json.dumps(paths)}\n\n"
        "allow if {\n"
        f"\tinput.identity == {json.dumps(subject)}\n"
        '\tinput.method == "POST"\n'
        "\tinput.path in decisions\n"
        "}\n"
    )


def opa_bundle(
    policy: Policy,
    schemas: dict[str, list[str]],
    *,
    catalog: str = "iceberg",
    subject: str = OPA_CLIENT_IDENTITY,
) -> dict[str, str]:
    """The bundle's files (``OPA_BUNDLE_FILES``) as {file name: text}: the same bytes
    ``write_compiled`` puts in ``opa/`` plus the ``system.authz`` policy admitting ``subject``."""
    return {
        "lakehouse.rego": REGO_FILE.read_text(),
        "data.json": json.dumps(opa_data(policy, schemas, catalog=catalog), indent=2, sort_keys=True),
        "authz.rego": authz_policy(subject),
    }


def write_opa_bundle(
    policy: Policy,
    schemas: dict[str, list[str]],
    out: Path,
    *,
    catalog: str = "iceberg",
    subject: str = OPA_CLIENT_IDENTITY,
) -> list[Path]:
    """Write ``opa_bundle`` into ``out`` (created if missing), and beside it
    ``PII_READERS_BESIDE_BUNDLE`` (``pii_readers``: who Trino's pii_decrypt decrypts for), each
    file swapped in whole; returns the paths written. Other files of ``out`` are left alone."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    files = opa_bundle(policy, schemas, catalog=catalog, subject=subject)
    files[PII_READERS_BESIDE_BUNDLE] = json.dumps(pii_readers(policy), indent=2) + "\n"
    for name, text in files.items():
        path = out / name
        partial = path.with_name(f".{name}.{os.getpid()}.tmp")
        partial.write_text(text)
        os.replace(partial, path)
        written.append(path)
    return written
