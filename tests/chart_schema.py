"""``charts/lakehouse/values.schema.json`` (JSON Schema draft-07), made from ``values.yaml``: one
property per value, ``additionalProperties: false`` on every object but the free-form maps
(labels, annotations, selectors: string to string), every key required (Helm merges the defaults
in, so only a value removed with ``null`` or misspelt trips it), types from the defaults, and
the constraints of this module's rules: image tags not ``latest``, digests ``sha256:<64 hex>``,
cron schedules, ports, quantities, durations, Kubernetes names, enums. Descriptions are the
comments in ``values.yaml``, else the rule's.

    python -m tests.chart_schema          # rewrite values.schema.json
    python -m tests.chart_schema --check  # exit 1 when it differs from what values.yaml gives

``tests/test_chart_docs.py`` checks the schema covers values.yaml exactly and that Helm refuses
what it should with a message naming the value."""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

from tests.chart_docs import CHART, comments, is_free_form

SCHEMA_FILE = CHART / "values.schema.json"

K8S_NAME = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)?$"  # empty: the chart's own
HOSTNAME = r"^(([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*)?$"
QUANTITY = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|M|Mi|G|Gi|T|Ti|P|Pi|E|Ei)?$"
GO_DURATION = r"^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$"
PROM_DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"
CRON_FIELD = r"[0-9*/,?LW#A-Za-z-]+"
CRON = rf"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|{CRON_FIELD}( {CRON_FIELD}){{4}})$"

# a Docker tag that is not "latest": Go's regexp (Helm's schema checker) has no lookahead, so
# the pattern spells out "any tag of another length, or differing from latest at some position"
_T, _F = "[A-Za-z0-9_.-]", "[A-Za-z0-9_]"
NOT_LATEST = (
    rf"^({_F}{_T}{{0,4}}|{_F}{_T}{{6,127}}|[A-Za-km-z0-9_]{_T}{{5}}|l[A-Zb-z0-9_.-]{_T}{{4}}"
    rf"|la[A-Za-su-z0-9_.-]{_T}{{3}}|lat[A-Za-df-z0-9_.-]{_T}{{2}}|late[A-Za-rt-z0-9_.-]{_T}"
    r"|lates[A-Za-su-z0-9_.-])$"
)
TAG = {
    "type": "string",
    "pattern": NOT_LATEST,
    "description": "the image's version tag (never latest: a floating tag is refused)",
}
DIGEST = {
    "type": "string",
    "pattern": r"^(sha256:[0-9a-f]{64})?$",
    "description": "the image's digest, sha256:<64 hex digits>, pinned after the tag; empty: the tag alone",
}
REPOSITORY = {
    "type": "string",
    "minLength": 1,
    "pattern": r"^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?$",
    "description": "the image's repository (registry host and path), without tag or digest",
}
CPU = {"type": ["string", "number"], "pattern": QUANTITY, "minimum": 0}
RESOURCE_LIST = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cpu", "memory"],
    "properties": {
        "cpu": {**CPU, "description": "CPU (cores, or millicores: 250m)"},
        "memory": {"type": "string", "pattern": QUANTITY, "description": "memory (512Mi, 2Gi)"},
        "ephemeral-storage": {"type": "string", "pattern": QUANTITY, "description": "local scratch space"},
    },
}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "required": ["requests", "limits"],
    "description": "the container's resources: requests and limits of cpu and memory, both required",
    "properties": {
        "requests": {**RESOURCE_LIST, "description": "what the scheduler reserves for the container"},
        "limits": {**RESOURCE_LIST, "description": "the most the container may use"},
    },
}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}

# by the last key of a value's path: its schema (merged over the one its default gives)
BY_KEY: dict[str, dict[str, Any]] = {
    "tag": TAG,
    "digest": DIGEST,
    "repository": REPOSITORY,
    "enabled": {"type": "boolean", "description": "render this component (false: none of its objects)"},
    "existingSecret": {
        "type": "string",
        "pattern": K8S_NAME,
        "description": "an existing Secret to use instead of a generated one",
    },
    "existingClaim": {
        "type": "string",
        "pattern": K8S_NAME,
        "description": "an existing PersistentVolumeClaim",
    },
    "tlsSecret": {"type": "string", "pattern": K8S_NAME, "description": "a kubernetes.io/tls Secret"},
    "storageClass": {
        "type": "string",
        "pattern": K8S_NAME,
        "description": "the volume's StorageClass; empty: the cluster's default",
    },
    "className": {
        "type": "string",
        "pattern": K8S_NAME,
        "description": "the IngressClass; empty: the cluster's default",
    },
    "host": {"type": "string", "pattern": HOSTNAME, "description": "a host name"},
    "size": {"type": "string", "pattern": QUANTITY, "description": "the volume's size (a quantity: 20Gi)"},
    "replicas": {"type": "integer", "minimum": 1, "description": "pods of this component"},
    "minReplicas": {"type": "integer", "minimum": 1, "description": "the fewest pods the autoscaler keeps"},
    "maxReplicas": {"type": "integer", "minimum": 1, "description": "the most pods the autoscaler starts"},
    "minAvailable": {
        "type": "integer",
        "minimum": 0,
        "description": "pods a voluntary disruption leaves running",
    },
    "targetCPUUtilizationPercentage": {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "description": "the CPU use (percent of requests) the autoscaler aims at",
    },
    "schedule": {
        "type": "string",
        "pattern": CRON,
        "description": "when the CronJob runs (cron: minute hour day month weekday)",
    },
    "port": {**PORT, "description": "a TCP port"},
    "metricsPort": {**PORT, "description": "the port of Prometheus /metrics"},
    "backoffLimit": {"type": "integer", "minimum": 0, "description": "retries of a failed run"},
    "activeDeadlineSeconds": {
        "type": "integer",
        "minimum": 1,
        "description": "a run lasting longer is stopped (seconds)",
    },
    "duration": {
        "type": "string",
        "pattern": GO_DURATION,
        "description": "the certificate's lifetime (a Go duration: 2160h)",
    },
    "renewBefore": {
        "type": "string",
        "pattern": GO_DURATION,
        "description": "renew the certificate this long before it expires",
    },
    "interval": {"type": "string", "pattern": PROM_DURATION, "description": "the scrape interval (30s)"},
    "scrapeTimeout": {"type": "string", "pattern": PROM_DURATION, "description": "the scrape timeout (10s)"},
    "runAsUser": {"type": "integer", "minimum": 1, "description": "a non-root uid (and gid)"},
    "database": {
        "type": "string",
        "pattern": r"^[a-z_][a-z0-9_]*$",
        "description": "its database on the chart's PostgreSQL",
    },
    "databases": {
        "type": "array",
        "items": {"type": "string", "pattern": r"^[a-z_][a-z0-9_]*$"},
        "uniqueItems": True,
    },
    "accessModes": {
        "type": "array",
        "minItems": 1,
        "items": {"enum": ["ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"]},
        "description": "the volume's access modes",
    },
    "imagePullSecrets": {
        "type": "array",
        "items": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name"],
            "properties": {"name": {"type": "string", "pattern": K8S_NAME}},
        },
        "description": "Secrets to pull images with: [{name: regcred}]",
    },
    "resources": RESOURCES,
}

# by how a key ends (an alert threshold's unit, say), unless BY_KEY names the key itself
BY_SUFFIX: dict[str, dict[str, Any]] = {
    "Ratio": {"type": "number", "minimum": 0, "maximum": 1},
    "Seconds": {"type": "number", "exclusiveMinimum": 0},
    "Days": {"type": "integer", "minimum": 1},
    "For": {"type": "string", "pattern": PROM_DURATION},
    "15m": {"type": "integer", "minimum": 1},
    "Records": {"type": "integer", "minimum": 1},
    "Hours": {"type": "number", "exclusiveMinimum": 0},
    "Snapshots": {"type": "integer", "minimum": 1},
}

# by full path: constraints the key alone does not give
BY_PATH: dict[str, dict[str, Any]] = {
    "global.imageRegistry": {"type": "string", "pattern": r"^([a-z0-9]([a-z0-9._:/-]*[a-z0-9])?)?$"},
    "global.tls.certManager.issuerRef.kind": {
        "enum": ["Issuer", "ClusterIssuer"],
        "description": "the issuer's kind",
    },
    "global.tls.certManager.issuerRef.name": {
        "type": "string",
        "pattern": K8S_NAME,
        "description": "the cert-manager issuer that signs the release's certificate",
    },
    "global.tls.certManager.issuerRef.group": {"type": "string", "description": "the issuer's API group"},
    "global.tls.certManager.enabled": {
        "type": "boolean",
        "description": "make the release's certificate (<release>-tls) with cert-manager",
    },
    "global.insecure": {
        "type": "boolean",
        "description": "acknowledge global.tls.enabled=false (TLS off on every hop)",
    },
    "objectStore.bucket": {
        "type": "string",
        "pattern": r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        "description": "the warehouse's bucket",
    },
    "objectStore.region": {"type": "string", "minLength": 1, "description": "the S3 region"},
    "objectStore.minio.replicas": {
        "type": "integer",
        "minimum": 4,
        "description": "MinIO servers (erasure-coded distributed mode needs 4 or more)",
    },
    "objectStore.minio.kms.keyName": {
        "type": "string",
        "pattern": r"^[A-Za-z0-9_-]+$",
        "description": "the name of MinIO's KMS key",
    },
    "objectStore.external.endpoint": {
        "type": "string",
        "pattern": r"^(https?://[^\s/]+(/.*)?)?$",
        "description": "the external S3 endpoint",
    },
    "postgresql.external.host": {
        "type": "string",
        "pattern": HOSTNAME,
        "description": "the external PostgreSQL server",
    },
    "postgresql.external.sslmode": {
        "enum": ["require", "verify-ca", "verify-full"],
        "description": "libpq sslmode towards the external server (TLS always)",
    },
    "kafka.replicas": {
        "type": "integer",
        "minimum": 1,
        "description": "Kafka pods, each broker and controller (3 for a quorum that survives one loss)",
    },
    "kafka.external.bootstrap": {
        "type": "string",
        "pattern": r"^([^\s,:]+:[0-9]{1,5}(,[^\s,:]+:[0-9]{1,5})*)?$",
        "description": "HOST:PORT,... of the external Kafka",
    },
}

# the descriptions of maps that carry no comment in values.yaml (a comment wins)
DESCRIBED: dict[str, str] = {
    "image": "the container image, pinned by version (and by digest when one is given)",
    "persistence": "each pod's volume (a PersistentVolumeClaim per pod)",
    "external": "an existing service to use when the in-chart one is disabled",
    "ingress": "an Ingress for clients outside the cluster (TLS)",
    "autoscaling": "a HorizontalPodAutoscaler",
    "global": "settings of every component",
    "global.tls": "TLS on every hop: the release's certificate",
    "global.tls.certManager": "the release's certificate from cert-manager (else global.tls.existingSecret)",
    "global.tls.certManager.issuerRef": "the cert-manager issuer of the release's certificate",
    "global.networkPolicy": "NetworkPolicies: default-deny and one allow per flow",
    "global.networkPolicy.dnsPodSelector": "the labels of the cluster's DNS pods",
    "objectStore": "the object store of the warehouse: MinIO in the release, or an external S3",
    "objectStore.minio": "MinIO in the release (distributed, SSE-KMS, TLS)",
    "postgresql": "PostgreSQL for Nessie, the device registry, Airflow, Superset and MLflow: in the release, or external",
    "nessie": "Nessie, the catalog (JDBC version store on PostgreSQL, Iceberg REST at /iceberg)",
    "opa": "OPA, Trino's access control (the policy bundle compiled from policies/)",
    "trino": "Trino, the SQL engine",
    "trino.coordinator": "Trino's coordinator",
    "trino.worker": "Trino's workers",
    "trino.catalog": "the placeholders of files/config/trino/catalog/iceberg.properties (also iceberg_wap)",
    "trino.accessControl": "the placeholders of files/config/trino/access-control.properties",
    "kafka": "Apache Kafka in KRaft mode (SASL_SSL): in the release, or external",
    "kafka.config": "the placeholders of files/config/kafka/server.properties",
    "nessie.config": "the placeholders of files/config/nessie/application.properties",
    "platform": "the platform's own services (the platform image)",
    "platform.sink": "the Kafka sink",
    "platform.gateway": "the edge gateway",
    "platform.gateway.ingress": "an Ingress for edge devices outside the cluster (TLS)",
    "platform.dbt": "the dbt build CronJob",
    "platform.maintenance": "the table maintenance CronJob",
    "metrics": "Prometheus Operator objects",
    "metrics.prometheusRule": "a PrometheusRule with the platform's alerts",
    "metrics.prometheusRule.thresholds.sinkLagFor": "how long the sink's lag must last before the alert fires",
    "metrics.prometheusRule.thresholds.gateway5xxRatio": "share of the gateway's answers that are 5xx (5 minutes)",
    "airflow": "Apache Airflow (its issue is open: renders nothing yet)",
    "superset": "Apache Superset (its issue is open: renders nothing yet)",
    "superset.trino": "how Superset queries Trino",
    "superset.trino.catalog": "the Trino catalog Superset's database points at",
    "mlflow": "MLflow (its issue is open: renders nothing yet)",
    "mlflow.artifacts.bucket": "the bucket of MLflow's artifacts",
    "mlflow.artifacts.prefix": "the key prefix of MLflow's artifacts in that bucket",
    "feast": "Feast (its issue is open: renders nothing yet)",
    "feast.onlineStore.redis": "the Redis-protocol online store",
}

# the names of each service's configuration template, for the placeholders' descriptions
CONFIG_FILES = {
    "nessie.config": "files/config/nessie/application.properties",
    "trino.catalog": "files/config/trino/catalog/iceberg.properties",
    "trino.accessControl": "files/config/trino/access-control.properties",
    "kafka.config": "files/config/kafka/server.properties",
}


def _base(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, int):
        return {"type": "integer"}
    if isinstance(value, float):
        return {"type": "number"}
    if isinstance(value, list):
        items = {_base(v).get("type") for v in value} - {None}
        schema: dict[str, Any] = {"type": "array"}
        schema["items"] = {"type": items.pop()} if len(items) == 1 else {"type": "string"}
        return schema
    if value is None:
        return {}
    return {"type": "string"}


def _free_form() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "propertyNames": {
            "pattern": r"^([a-z0-9A-Z]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"
        },
    }


def schema_of(value: Any, path: str, notes: dict[str, tuple[str, bool]]) -> dict[str, Any]:
    key = path.rsplit(".", 1)[-1]
    parent = path.rsplit(".", 1)[0] if "." in path else ""
    if key in ("resources",) and isinstance(value, dict):
        schema = dict(RESOURCES)
    elif isinstance(value, dict) and (not value or key in ("labels", "annotations") or is_free_form(value)):
        schema = _free_form()
    elif isinstance(value, dict):
        schema = {
            "type": "object",
            "additionalProperties": False,
            "required": list(value),
            "properties": {k: schema_of(v, f"{path}.{k}" if path else k, notes) for k, v in value.items()},
        }
    else:
        schema = {**_base(value), **BY_SUFFIX.get(next((x for x in BY_SUFFIX if key.endswith(x)), ""), {})}
        schema.update(BY_KEY.get(key, {}))
        if parent in CONFIG_FILES:
            # any string: lakehouse.renderConfig refuses an empty, multi-line or backslashed value
            # itself, by the same rules as the stack's renderer (tests/test_config_templates.py)
            schema = {"type": "string"}
            schema["description"] = f"the placeholder {{{{ {key} }}}} of {CONFIG_FILES[parent]}"
    schema.update(BY_PATH.get(path, {}))
    note = notes.get(path, ("", False))[0]
    if note:
        schema["description"] = note
    elif "description" not in schema and (path in DESCRIBED or key in DESCRIBED):
        schema["description"] = DESCRIBED.get(path) or DESCRIBED[key]
    return schema


def build() -> dict[str, Any]:
    text = (CHART / "values.yaml").read_text()
    values = yaml.safe_load(text) or {}
    notes = comments(text)
    root = schema_of(values, "", notes)
    root.pop("description", None)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the lakehouse chart",
        "description": "Every value of charts/lakehouse/values.yaml (made by `python -m tests.chart_schema`); Helm refuses values that do not match, naming them.",
        **root,
    }


def dumps(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    wanted = dumps(build())
    if "--check" in argv:
        if not SCHEMA_FILE.is_file() or SCHEMA_FILE.read_text() != wanted:
            print(
                f"{SCHEMA_FILE} differs from values.yaml: run `python -m tests.chart_schema`", file=sys.stderr
            )
            return 1
        return 0
    SCHEMA_FILE.write_text(wanted)
    print(f"{SCHEMA_FILE}: {len(wanted.splitlines())} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
