"""One configuration source: the chart (rendered by Helm's own engine, `helm-python-sdk`) and the
stack profile (`lakehouse.local._config`) render every service configuration from the same
template files with the same values into the same bytes, and refuse the same mistakes."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import yaml

from lakehouse.errors import ServerError
from lakehouse.local._config import TEMPLATES, placeholders, render_config

CHART = Path(__file__).resolve().parent.parent / "charts" / "lakehouse"

# template -> (the chart's values path of its placeholders, the rendered manifest, the data key)
IN_CHART = {
    "nessie/application.properties": (("nessie", "config"), "nessie-config.yaml", "application.properties"),
    "trino/catalog/iceberg.properties": (("trino", "catalog"), "trino-config.yaml", "iceberg.properties"),
    "trino/access-control.properties": (
        ("trino", "accessControl"),
        "trino-config.yaml",
        "access-control.properties",
    ),
    "kafka/server.properties": (("kafka", "config"), "kafka-config.yaml", "server.properties"),
}


# placeholders the chart fills in with the release's own services when left empty (Nessie, the
# object store, OPA, PostgreSQL, the Kafka quorum): the stack always gives them
RELEASE_DEFAULTS = {"rest_uri", "s3_endpoint", "opa_url", "jdbc_url", "controller_quorum"}


def _chart_values(values_path: tuple[str, ...], values: dict[str, Any]) -> dict[str, Any]:
    """The chart's default values, the required ones of the other templates filled in, with
    ``values`` at ``values_path``."""
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    for other_path, _, _ in IN_CHART.values():
        section = chart_values
        for key in other_path:
            section = section[key]
        if other_path == values_path:
            section.clear()
            section.update(values)
        else:
            section.update({key: value or f"x-{key}" for key, value in section.items()})
    chart_values["global"]["tls"]["existingSecret"] = "lakehouse-tls"  # TLS needs certificates
    return dict(chart_values)


def render_chart(name: str, values: dict[str, Any]) -> str:
    """The chart's rendering of template ``name`` with ``values`` (Helm's engine; a failing
    render raises with Helm's message)."""
    from helm_python import Chart

    values_path, manifest, key = IN_CHART[name]
    rendered = Chart.load(str(CHART)).render(
        _chart_values(values_path, values), name="lakehouse", namespace="lakehouse", is_install=True
    )
    documents = yaml.safe_load_all(rendered[f"lakehouse/templates/{manifest}"])
    return str(next(d for d in documents if d and key in d["data"])["data"][key])


def awkward_values(name: str, salt: str) -> dict[str, str]:
    """A value for each placeholder, with the characters a properties file and a YAML block
    could trip on (no line break or backslash: both renderers refuse those)."""
    tricky = ":=#! {}$%&'\"ü€" + string.ascii_letters[: len(salt) + 3]
    return {key: f"{key}-{salt}-{tricky}" for key in sorted(placeholders(name))}


@pytest.mark.unit
def test_every_template_is_rendered_by_the_chart() -> None:
    templates = {str(p.relative_to(TEMPLATES)) for p in TEMPLATES.rglob("*") if p.is_file()}
    assert templates == set(IN_CHART)


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(IN_CHART))
@pytest.mark.parametrize("salt", ["a", "b9", "ccc-x"])
def test_the_chart_and_the_stack_render_the_same_bytes(name: str, salt: str) -> None:
    values = awkward_values(name, salt)
    stack = render_config(name, values)
    assert "{{" not in stack and all(value in stack for value in values.values())
    assert render_chart(name, values) == stack


@pytest.mark.unit
@pytest.mark.parametrize("name", sorted(IN_CHART))
@pytest.mark.parametrize(
    "mistake",
    ["missing", "unknown", "empty", "line break", "backslash"],
)
def test_both_renderers_refuse_the_same_mistakes(name: str, mistake: str) -> None:
    values = awkward_values(name, "m")
    # a placeholder the chart fills in with the release's own service when left empty is no
    # mistake to leave empty in the chart: take the first of the others
    first = sorted(set(values) - RELEASE_DEFAULTS)[0]
    if mistake == "missing":
        del values[first]
    elif mistake == "unknown":
        values["no_such_placeholder"] = "x"
    elif mistake == "empty":
        values[first] = ""
    elif mistake == "line break":
        values[first] = "a\nb=c"
    else:
        values[first] = "a\\b"
    with pytest.raises(ServerError):
        render_config(name, values)
    # Helm merges the chart's defaults under the values given: a null removes a default
    chart_values: dict[str, Any] = {first: None, **values} if mistake == "missing" else values
    with pytest.raises(Exception, match=r"fail|placeholder|value") as chart_error:
        render_chart(name, chart_values)
    assert first in str(chart_error.value) or "no_such_placeholder" in str(chart_error.value)


@pytest.mark.integration
@pytest.mark.cluster
def test_the_running_stack_ran_exactly_what_the_chart_renders(cluster_home: Path) -> None:
    """The configuration files the stack's services started with, against the chart's rendering
    of the values they were rendered with (recorded next to each file)."""
    recorded = sorted((cluster_home / "stack").rglob("*.values.json"))
    assert {json.loads(p.read_text())["template"] for p in recorded} == set(IN_CHART)
    for values_file in recorded:
        spec = json.loads(values_file.read_text())
        ran = values_file.with_name(values_file.name.removesuffix(".values.json")).read_text()
        assert render_chart(spec["template"], spec["values"]) == ran, values_file


@pytest.mark.unit
def test_the_publish_catalog_is_the_same_template_seen_at_the_branch() -> None:
    """Trino's iceberg_wap catalog (write-audit-publish): the chart derives it from the catalog's
    values and the branch as the stack does (`start_trino(branches=...)`)."""
    from helm_python import Chart

    values = awkward_values("trino/catalog/iceberg.properties", "w") | {
        "rest_uri": "http://nessie:19120/iceberg/"
    }
    chart_values = _chart_values(("trino", "catalog"), values)
    chart_values["trino"]["wapBranch"] = "wap-1"
    rendered = Chart.load(str(CHART)).render(
        chart_values, name="lakehouse", namespace="lakehouse", is_install=True
    )
    documents = list(yaml.safe_load_all(rendered["lakehouse/templates/trino-config.yaml"]))
    wap = next(d for d in documents if "iceberg_wap.properties" in d["data"])["data"][
        "iceberg_wap.properties"
    ]
    assert wap == render_config(
        "trino/catalog/iceberg.properties", values | {"rest_uri": "http://nessie:19120/iceberg/wap-1"}
    )


@pytest.mark.unit
def test_trino_reaches_the_release_s_own_services_when_left_empty() -> None:
    """Trino's catalogs and access control left without rest_uri, s3_endpoint and opa_url point at
    the release's Nessie, MinIO and OPA, by the names their certificate holds."""
    from helm_python import Chart

    chart_values = _chart_values(
        ("trino", "catalog"), awkward_values("trino/catalog/iceberg.properties", "d")
    )
    chart_values["trino"]["catalog"].update({"rest_uri": "", "s3_endpoint": ""})
    chart_values["trino"]["accessControl"]["opa_url"] = ""
    rendered = Chart.load(str(CHART)).render(chart_values, name="lake", namespace="data", is_install=True)
    documents = [d for d in yaml.safe_load_all(rendered["lakehouse/templates/trino-config.yaml"]) if d]
    data = {key: value for d in documents for key, value in d["data"].items()}
    assert (
        "iceberg.rest-catalog.uri=https://lake-nessie.data.svc:19120/iceberg\n" in data["iceberg.properties"]
    )
    assert (
        "iceberg.rest-catalog.uri=https://lake-nessie.data.svc:19120/iceberg/wap\n"
        in data["iceberg_wap.properties"]
    )
    assert "s3.endpoint=https://lake-minio.data.svc:9000\n" in data["iceberg.properties"]
    assert (
        "opa.policy.uri=https://lake-opa.data.svc:8181/v1/data/lakehouse/trino/allow\n"
        in data["access-control.properties"]
    )
