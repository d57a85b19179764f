"""The chart's test kit: its values sets, renders with Helm's own engine (``helm-python-sdk``,
in-process) or the real ``helm`` binary, and walks over what a render holds (objects, pod specs,
containers, images), in the way the Apache Airflow chart's tests do.

Everything here is generic over what the chart renders: a test iterates over every rendered
object, so it holds as templates are added."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "lakehouse"
RELEASE = "lakehouse"
NAMESPACE = "lakehouse"
VALUES_SETS = {
    "minimal": CHART / "ci" / "minimal-values.yaml",
    "production": CHART / "ci" / "production-values.yaml",
}
CHART_TOOLS_VENV = REPO / ".venv-chart-tools"
TOOLS_HINT = "run `make chart-tools`"

# the kinds whose objects hold a pod template, and where it is
POD_TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")


# --- values ---------------------------------------------------------------------------------


def chart_defaults() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def values_set(name: str) -> dict[str, Any]:
    """A values set of ``charts/lakehouse/ci`` (as given to ``helm -f``)."""
    return dict(yaml.safe_load(VALUES_SETS[name].read_text()) or {})


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` deep-merged over a copy of ``base`` (maps merge, anything else replaces)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def at(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": value}}`` for the dotted path ``a.b``."""
    result: dict[str, Any] = {}
    node = result
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = value
    return merge(values, result)


def get(values: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = values
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def leaves(values: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every dotted path to a non-map value (an empty map counts as a value)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{path}.")
        else:
            yield path, value


# --- rendering ------------------------------------------------------------------------------


def render_files(values: dict[str, Any]) -> dict[str, str]:
    """Template path -> rendered text, by Helm's engine in-process (a fresh load per render:
    ``render`` mutates the loaded chart). A failing render raises with Helm's message."""
    from helm_python import Chart

    return dict(Chart.load(str(CHART)).render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


def parse(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


_RENDERED: dict[str, list[dict[str, Any]]] = {}


def render(values: dict[str, Any], *, fresh: bool = False) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` (hooks included, NOTES.txt left out).
    A render takes seconds (bcrypt, generated keys): the same values give a copy of the first
    render in this process unless ``fresh`` (generated values then differ)."""
    key = json.dumps(values, sort_keys=True, default=str)
    if fresh or key not in _RENDERED:
        objects: list[dict[str, Any]] = []
        for path, text in sorted(render_files(values).items()):
            if path.endswith(".yaml") or path.endswith(".yml"):
                objects.extend(parse(text))
        _RENDERED[key] = objects
    return copy.deepcopy(_RENDERED[key])


def render_set(name: str, **overrides: Any) -> list[dict[str, Any]]:
    """The objects of values set ``name`` with dotted-path ``overrides`` (``a__b`` for ``a.b``)."""
    values = values_set(name)
    for path, value in overrides.items():
        values = at(values, path.replace("__", "."), value)
    return render(values)


def go_helm() -> Path:
    """The real ``helm`` built from the locked module (``lakehouse stack install --only helm``)."""
    from lakehouse.local import go_tool

    return go_tool("helm")


def helm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(go_helm()), *args], capture_output=True, text=True, timeout=timeout)


def chart_tool(name: str) -> Path:
    """A checker of the chart's own venv (``kubernetes-validate``, ``checkov``)."""
    path = CHART_TOOLS_VENV / "bin" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {TOOLS_HINT}")
    return path


# --- walking a render -----------------------------------------------------------------------


def ident(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def of_kind(objects: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") in kinds]


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def component(obj: dict[str, Any]) -> str | None:
    return labels(obj).get("app.kubernetes.io/component")


def pod_template(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The pod template of a workload, Job or CronJob (a Pod: itself)."""
    if obj.get("kind") == "Pod":
        return obj
    path = POD_TEMPLATE_PATHS.get(str(obj.get("kind")))
    if path is None:
        return None
    node: Any = obj
    for key in path:
        node = (node or {}).get(key)
    return node if isinstance(node, dict) else {}


def pods(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(owner object, pod template) of every pod the render would run."""
    for obj in objects:
        template = pod_template(obj)
        if template is not None:
            yield obj, template


def containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind of container, container) of a pod template: init, regular and ephemeral."""
    spec = pod.get("spec") or {}
    for key in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(key) or []:
            yield key, container


def selects(selector: dict[str, Any], pod_labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels, matchExpressions) selects these labels."""
    if not selector:
        return True  # an empty selector selects every pod
    for key, value in (selector.get("matchLabels") or {}).items():
        if pod_labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        if operator == "In" and pod_labels.get(key) not in values:
            return False
        if operator == "NotIn" and pod_labels.get(key) in values:
            return False
        if operator == "Exists" and key not in pod_labels:
            return False
        if operator == "DoesNotExist" and key in pod_labels:
            return False
    return True


def names_value(message: str, path: str) -> bool:
    """Whether a failure message names the value ``a.b.c``: as such, or as the JSON pointer
    ``/a/b/c`` of Helm's schema errors."""
    return path in message or "/" + path.replace(".", "/") in message


def manifest_text(objects: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(objects, sort_keys=False)
