"""Nessie branches through its API v2 (``/api/v2``): what write-audit-publish needs.

A branch is a named pointer to a commit of the whole catalog: a build that writes to one changes
nothing another branch sees, and merging it into ``main`` publishes every table it changed in
one atomic commit. pynessie speaks only API v1 and pins ``marshmallow<4``: these few calls are
plain HTTP.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from lakehouse.errors import CatalogConflict, ServerError

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Branch:
    name: str
    hash: str


class Nessie:
    """The Nessie server whose API v2 is at ``api`` (``http://host:port/api/v2``)."""

    def __init__(self, api: str) -> None:
        self.api = api.rstrip("/")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 - the configured Nessie URL
            f"{self.api}/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
                text = response.read()
        except urllib.error.HTTPError as exc:
            detail = _message(exc.read())
            if exc.code == 409:
                raise CatalogConflict(f"Nessie refused {method} {path}: {detail}") from exc
            if exc.code == 404:
                raise ServerError(f"Nessie has no {path.split('?')[0]}: {detail}") from exc
            raise ServerError(f"Nessie answered {exc.code} to {method} {path}: {detail}") from exc
        except OSError as exc:
            raise ServerError(f"cannot reach Nessie at {self.api}: {exc}") from exc
        return json.loads(text) if text.strip() else {}

    def branch(self, name: str) -> Branch | None:
        """The branch ``name`` and its head, or None when there is none."""
        try:
            reference = self._call("GET", f"trees/{urllib.parse.quote(name, safe='')}")["reference"]
        except ServerError as exc:
            if "has no" in str(exc):
                return None
            raise
        return Branch(reference["name"], reference["hash"])

    def create_branch(self, name: str, at: Branch) -> Branch:
        query = urllib.parse.urlencode({"name": name, "type": "BRANCH"})
        reference = self._call("POST", f"trees?{query}", {"type": "BRANCH", "name": at.name, "hash": at.hash})
        return Branch(reference["reference"]["name"], reference["reference"]["hash"])

    def delete_branch(self, branch: Branch) -> None:
        self._call("DELETE", f"trees/{urllib.parse.quote(branch.name, safe='')}@{branch.hash}")

    def fresh_branch(self, name: str, source: str = "main") -> tuple[Branch, Branch]:
        """``name`` created anew at ``source``'s head (an old one of that name is dropped first):
        (the new branch, ``source`` as it was)."""
        origin = self.branch(source)
        if origin is None:
            raise ServerError(f"Nessie has no branch {source}")
        old = self.branch(name)
        if old is not None:
            self.delete_branch(old)
        return self.create_branch(name, origin), origin

    def merge(self, source: Branch, into: Branch, *, message: str) -> Branch:
        """Merge ``source`` into ``into``, expected at the head recorded; the new head.
        ``CatalogConflict`` when both changed the same table since they parted."""
        target = f"trees/{urllib.parse.quote(into.name, safe='')}@{into.hash}/history/merge"
        self._call(
            "POST",
            target,
            {"fromRefName": source.name, "fromHash": source.hash, "message": message},
        )
        merged = self.branch(into.name)
        assert merged is not None
        return merged

    def contents(self, branch: str) -> dict[str, str]:
        """Every Iceberg table on ``branch``: ``layer.table`` -> its metadata location."""
        entries = self._call("GET", f"trees/{urllib.parse.quote(branch, safe='')}/entries?content=true")
        return {
            ".".join(entry["name"]["elements"]): entry["content"]["metadataLocation"]
            for entry in entries.get("entries", [])
            if entry.get("type") == "ICEBERG_TABLE"
        }


def _message(body: bytes) -> str:
    try:
        parsed = json.loads(body)
    except ValueError:
        return " ".join(body.decode(errors="replace").split())[:300]
    return str(parsed.get("message") or parsed)[:300]
