"""The chart's values contract: ``values.schema.json`` covers every value of ``values.yaml``
exactly (``additionalProperties: false`` on every object), Helm refuses a wrong type, an unknown
key or a ``latest`` tag with a message naming the value, and the values table of
``charts/README.md`` is the one generated from the comments in ``values.yaml``."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests import chart_docs, chart_schema
from tests.chart import CHART, VALUES_SETS, at, chart_defaults, leaves, names_value, render, values_set

pytestmark = pytest.mark.unit

SCHEMA_FILE = CHART / "values.schema.json"


def _schema() -> dict[str, Any]:
    assert SCHEMA_FILE.is_file(), f"{SCHEMA_FILE} is missing: python -m tests.chart_schema"
    return dict(json.loads(SCHEMA_FILE.read_text()))


def _properties(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """Dotted path -> schema of every declared property (into declared objects only)."""
    found: dict[str, dict[str, Any]] = {}
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        found[path] = sub
        found.update(_properties(sub, f"{path}."))
    return found


def _structured_paths(values: dict[str, Any], prefix: str = "") -> set[str]:
    """Every path of values.yaml down to its leaves and free-form maps."""
    paths = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        paths.add(path)
        if isinstance(value, dict) and value and not chart_docs.is_free_form(value):
            paths |= _structured_paths(value, f"{path}.")
    return paths


def test_the_schema_is_draft_07_and_what_values_yaml_gives() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA_FILE.read_text() == chart_schema.dumps(chart_schema.build()), (
        "values.schema.json differs from values.yaml and its rules: python -m tests.chart_schema"
    )


def test_the_schema_covers_every_value_and_nothing_else() -> None:
    declared = _properties(_schema())
    in_values = _structured_paths(chart_defaults())
    assert in_values - set(declared) == set(), "values without a schema"
    structured = {
        p for p in declared if not any(p.startswith(f"{q}.") for q in declared if _free(declared[q]))
    }
    resources = {
        p
        for p in structured
        if ".resources." in f"{p}." and p.rsplit(".", 1)[-1] not in ("requests", "limits")
    }
    assert structured - in_values - resources == set(), "schema properties that values.yaml lacks"


def _free(schema: dict[str, Any]) -> bool:
    return isinstance(schema.get("additionalProperties"), dict)


def test_every_object_is_closed_and_every_value_described() -> None:
    problems = []
    for path, schema in _properties(_schema()).items():
        if not str(schema.get("description") or "").strip():
            problems.append(f"{path}: no description")
        if schema.get("type") == "object" or "properties" in schema:
            closed = schema.get("additionalProperties") is False
            free_form = (
                schema.get("additionalProperties") == {"type": "string"} and "properties" not in schema
            )
            if not (closed or free_form):
                problems.append(f"{path}: neither additionalProperties: false nor a string-to-string map")
            if (
                closed
                and set(schema.get("required") or []) != set(schema.get("properties") or {})
                and not path.endswith(("requests", "limits"))
            ):
                problems.append(f"{path}: not every key is required")
    assert _schema().get("additionalProperties") is False
    assert not problems, "\n".join(problems)


def test_every_image_tag_and_digest_and_schedule_is_constrained() -> None:
    declared = _properties(_schema())
    tags = [p for p in declared if p.endswith("image.tag")]
    assert tags and len(tags) == len([p for p, _ in leaves(chart_defaults()) if p.endswith("image.tag")])
    for path in tags:
        assert declared[path]["pattern"] == chart_schema.NOT_LATEST, path
        assert declared[path.removesuffix("tag") + "digest"]["pattern"] == "^(sha256:[0-9a-f]{64})?$", path
    schedules = [p for p in declared if p.endswith(".schedule")]
    assert schedules and all(declared[p]["pattern"] == chart_schema.CRON for p in schedules)


@pytest.mark.parametrize("name", ["defaults", *sorted(VALUES_SETS)])
def test_the_defaults_and_the_values_sets_meet_the_schema(name: str) -> None:
    from helm_python import Chart

    values = {} if name == "defaults" else values_set(name)
    Chart.load(str(CHART)).validate_schema(values)


@pytest.mark.parametrize(
    ("path", "value", "named", "why"),
    [
        ("nessie.replicas", "two", "nessie.replicas", "want integer"),
        ("global.tls.enabled", "yes", "global.tls.enabled", "want boolean"),
        ("platform.sink.resources.limits", "2Gi", "platform.sink.resources.limits", "want object"),
        ("objectStore.minio.replicas", 2, "objectStore.minio.replicas", "minimum"),
        ("platform.dbt.schedule", "every night", "platform.dbt.schedule", "pattern"),
        (
            "objectStore.external.existingSecret",
            "Not_A_Name",
            "objectStore.external.existingSecret",
            "pattern",
        ),
        ("nessie.imageTag", "1.0", "nessie", "imageTag"),
        ("global.tls.existingSecretName", "x", "global.tls", "existingSecretName"),
        ("kafka.image.tag", "latest", "kafka.image.tag", "latest"),
        ("platform.image.tag", "latest", "platform.image.tag", "latest"),
        ("trino.image.digest", "sha256:1234", "trino.image.digest", "pattern"),
        ("postgresql.password", "postgres", "postgresql", "password"),
    ],
)
def test_helm_refuses_a_wrong_value_naming_it(path: str, value: Any, named: str, why: str) -> None:
    with pytest.raises(Exception, match="schema") as failure:
        render(at(values_set("minimal"), path, value))
    message = str(failure.value)
    assert names_value(message, named) and why in message, message


@pytest.mark.parametrize("path", sorted(p for p, _ in leaves(chart_defaults()) if p.endswith("image.tag")))
def test_every_image_refuses_latest_by_schema(path: str) -> None:
    """Also the images of components that are off: the schema checks what templates never read."""
    with pytest.raises(Exception, match="latest") as failure:
        render(at(values_set("minimal"), path, "latest"))
    assert names_value(str(failure.value), path)


def test_the_readme_values_table_is_current() -> None:
    readme = chart_docs.README.read_text()
    assert chart_docs.with_table(readme, chart_docs.current_table()) == readme, (
        "charts/README.md's values table is stale: python -m tests.chart_docs"
    )


def test_the_values_table_has_a_documented_row_for_every_value() -> None:
    rows = chart_docs.rows((CHART / "values.yaml").read_text(), _schema())
    by_path = {row.path: row for row in rows}
    values = chart_defaults()
    for path in _structured_paths(values):
        node: Any = values
        for key in path.split("."):
            node = node[key]
        if isinstance(node, dict) and node and not chart_docs.is_free_form(node):
            continue  # a map of values: its values have the rows
        if ".resources." in f"{path}.":
            continue
        assert path in by_path, f"{path} has no row"
        assert by_path[path].description, f"{path} has no description"


def test_comments_are_read_from_the_lines_above_and_the_line_itself() -> None:
    text = (
        "# --- a section ---\n\n"
        "top:\n"
        "  # the first line\n"
        "  # the second line\n"
        "  value: 1  # and a trailing note\n"
        '  quoted: "a # b"\n'
        "  inner:\n"
        "    deep: [a, b]  # deep note\n"
    )
    notes = chart_docs.comments(text)
    assert notes["top.value"] == ("the first line the second line and a trailing note", True)
    assert notes["top.quoted"] == ("", True)
    assert notes["top.inner.deep"][0] == "deep note"
    assert "a section" not in json.dumps(notes)
    table = chart_docs.table(text, None)
    assert "| `top.value` | integer | `1` | the first line the second line and a trailing note |" in table
    assert yaml.safe_load(text)["top"]["quoted"] == "a # b"
