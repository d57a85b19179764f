"""The chart, rendered in-process by Helm's own engine (``helm-python-sdk``) and asserted on
object by object, the way the Apache Airflow chart tests itself: every pod and container runs
restricted, has requests and limits and is pinned; every pod is reached only through a
NetworkPolicy; no secret leaks into a ConfigMap; each component switches off cleanly; the
object store, PostgreSQL and Kafka can be external; bad input fails naming the value.

Every test iterates over whatever the chart renders; the checks that the real ``helm``,
``kubernetes-validate`` and ``checkov`` run are in ``test_chart_tools.py``."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from tests.chart import (
    RELEASE,
    VALUES_SETS,
    WORKLOAD_KINDS,
    at,
    chart_defaults,
    component,
    containers,
    get,
    ident,
    labels,
    leaves,
    names_value,
    of_kind,
    pods,
    render,
    render_set,
    selects,
    values_set,
)

pytestmark = pytest.mark.unit

SETS = sorted(VALUES_SETS)

# what the production values must render (by app.kubernetes.io/component, or by the name
# "<release>-<component>"): the platform's every long-running service and its scheduled work
PRODUCTION_WORKLOADS = {
    "nessie": ("nessie",),
    "trino": ("trino", "trino-coordinator"),
    "trino-worker": ("trino-worker",),
    "opa": ("opa",),
    "kafka": ("kafka",),
    "minio": ("minio",),
    "postgresql": ("postgresql",),
    "sink": ("sink",),
    "gateway": ("gateway",),
}
PRODUCTION_CRONJOBS = {"dbt": ("dbt",), "maintenance": ("maintenance",)}

# each component switch and the components whose objects it must remove (and, for a service
# others depend on, where the others then find it: SWITCHED_TO)
SWITCHES = {
    "nessie.enabled": ("nessie",),
    "opa.enabled": ("opa",),
    "trino.enabled": ("trino", "trino-coordinator", "trino-worker"),
    "platform.sink.enabled": ("sink",),
    "platform.gateway.enabled": ("gateway",),
    "platform.dbt.enabled": ("dbt",),
    "platform.maintenance.enabled": ("maintenance",),
}

SWITCHED_TO = {
    "nessie.enabled": {"trino.catalog.rest_uri": "https://nessie.catalog.example.net:19120/iceberg"},
    "opa.enabled": {"trino.accessControl.opa_url": "https://opa.policy.example.net:8181"},
}

# an in-chart service swapped for an external one: its switch, the values that point at the
# external service, the components that must be gone and the value each check names
EXTERNAL = {
    "objectStore": {
        "switch": "objectStore.minio.enabled",
        "values": {
            "objectStore.external.endpoint": "https://s3.storage.example.net:443",
            "objectStore.external.existingSecret": "external-s3-credentials",
        },
        "components": ("minio",),
        "secret": "external-s3-credentials",
    },
    "postgresql": {
        "switch": "postgresql.enabled",
        "values": {
            "postgresql.external.host": "pg.database.example.net",
            "postgresql.external.existingSecret": "external-pg-passwords",
        },
        "components": ("postgresql",),
        "secret": "external-pg-passwords",
    },
    "kafka": {
        "switch": "kafka.enabled",
        "values": {
            "kafka.external.bootstrap": "kafka-1.broker.example.net:9093,kafka-2.broker.example.net:9093",
            "kafka.external.existingSecret": "external-kafka-client",
        },
        "components": ("kafka",),
        "secret": "external-kafka-client",
    },
}

DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
IMAGE = re.compile(
    r"^(?P<name>[^@\s]+?):(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})(?P<digest>@sha256:[0-9a-f]{64})?$"
)
WEAK_PASSWORDS = [
    "password",
    "changeme",
    "admin",
    "minioadmin",
    "Sh0rt!pw",
    "xX-Password-1234567890",
    "MySuperLongMinioAdmin2024",
    "postgres-postgres-postgres",
]


@pytest.fixture(scope="module", params=SETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_set(request.param)


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render_set("production")


def _named(objects: list[dict[str, Any]], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """Objects of these components: by their component label, else by "<release>-<name>"."""
    found = []
    for obj in objects:
        label = component(obj)
        name = obj.get("metadata", {}).get("name", "")
        if label in names or (label is None and any(name == f"{RELEASE}-{n}" for n in names)):
            found.append(obj)
    return found


def _secret_values(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Every value of every rendered Secret (decoded), keyed by "<Secret>/<key>"."""
    found: dict[str, str] = {}
    for secret in of_kind(objects, "Secret"):
        for key, value in (secret.get("data") or {}).items():
            found[f"{ident(secret)}/{key}"] = base64.b64decode(value).decode("utf-8", "replace")
        for key, value in (secret.get("stringData") or {}).items():
            found[f"{ident(secret)}/{key}"] = str(value)
    return found


def _secret_refs(pod: dict[str, Any]) -> set[str]:
    """The Secrets a pod template reads: volumes (also projected), env and envFrom."""
    spec = pod.get("spec") or {}
    names: set[str] = set()
    for volume in spec.get("volumes") or []:
        if "secret" in volume:
            names.add(volume["secret"].get("secretName"))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                names.add(source["secret"].get("name"))
    for _, container in [
        *((None, c) for c in spec.get("initContainers") or []),
        *((None, c) for c in spec.get("containers") or []),
    ]:
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref.get("name"))
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                names.add(source["secretRef"].get("name"))
    names.discard(None)
    return names


# --- the production render holds the whole platform ------------------------------------------


def test_the_production_values_render_every_component(production: list[dict[str, Any]]) -> None:
    workloads = of_kind(production, *WORKLOAD_KINDS)
    missing = [c for c, names in PRODUCTION_WORKLOADS.items() if not _named(workloads, names)]
    assert not missing, (
        f"no Deployment/StatefulSet for {missing}; rendered: {sorted(ident(o) for o in workloads)}"
    )
    cronjobs = of_kind(production, "CronJob")
    missing = [c for c, names in PRODUCTION_CRONJOBS.items() if not _named(cronjobs, names)]
    assert not missing, f"no CronJob for {missing}; rendered: {sorted(ident(o) for o in cronjobs)}"


def test_every_object_is_labelled_and_named_within_limits(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objects = rendered
    assert objects
    for obj in objects:
        name = obj["metadata"]["name"]
        assert len(name) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?", name), ident(obj)
        assert labels(obj).get("app.kubernetes.io/instance") == RELEASE, f"{ident(obj)}: no instance label"
        assert "namespace" not in obj["metadata"] or obj["metadata"]["namespace"] == "lakehouse", ident(obj)


# --- Pod Security "restricted", resources ----------------------------------------------------


def test_every_pod_and_container_runs_restricted(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_name, objects = rendered
    checked = 0
    problems: list[str] = []
    for owner, pod in pods(objects):
        spec = pod.get("spec") or {}
        where = f"{values_name}: {ident(owner)}"
        pod_context = spec.get("securityContext") or {}
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(flag):
                problems.append(f"{where}: {flag}")
        for volume in spec.get("volumes") or []:
            if "hostPath" in volume:
                problems.append(f"{where}: hostPath volume {volume.get('name')}")
        if pod_context.get("runAsNonRoot") is not True:
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        if (pod_context.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            problems.append(f"{where}: pod securityContext.seccompProfile is not RuntimeDefault")
        if pod_context.get("runAsUser") == 0:
            problems.append(f"{where}: pod runs as uid 0")
        for kind, container in containers(pod):
            checked += 1
            at_ = f"{where} {kind}/{container.get('name')}"
            context = container.get("securityContext") or {}
            if context.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{at_}: allowPrivilegeEscalation is not false")
            if context.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{at_}: readOnlyRootFilesystem is not true")
            if context.get("privileged"):
                problems.append(f"{at_}: privileged")
            capabilities = context.get("capabilities") or {}
            if "ALL" not in (capabilities.get("drop") or []):
                problems.append(f"{at_}: capabilities.drop lacks ALL")
            if capabilities.get("add"):
                problems.append(f"{at_}: capabilities.add {capabilities['add']}")
            if context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is not True:
                problems.append(f"{at_}: runAsNonRoot is not true")
            if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
                problems.append(f"{at_}: runs as uid 0")
            seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{at_}: seccompProfile is {seccomp!r}, not RuntimeDefault")
    assert checked, f"{values_name}: the render runs no container at all"
    assert not problems, "\n".join(problems)


def test_every_container_has_requests_and_limits(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_name, objects = rendered
    problems = []
    checked = 0
    for owner, pod in pods(objects):
        for kind, container in containers(pod):
            if kind == "ephemeralContainers":
                continue
            checked += 1
            resources = container.get("resources") or {}
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if not (resources.get(part) or {}).get(resource):
                        problems.append(
                            f"{values_name}: {ident(owner)} {container.get('name')}: no {part}.{resource}"
                        )
    assert checked
    assert not problems, "\n".join(problems)


# --- images -----------------------------------------------------------------------------------


def test_every_image_is_pinned_by_version_and_by_digest_when_given(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    values_name, objects = rendered
    images = [
        (ident(owner), container["image"]) for owner, pod in pods(objects) for _, container in containers(pod)
    ]
    assert images
    for where, image in images:
        match = IMAGE.match(image)
        assert match, f"{values_name}: {where}: image {image!r} has no version tag"
        assert match["tag"] != "latest", f"{values_name}: {where}: image {image!r} is latest"
        if values_name == "production":  # every image of the production values has a digest
            assert DIGEST.search(image), f"{where}: image {image!r} is not pinned by digest"


def _image_paths() -> list[str]:
    return sorted(
        path.removesuffix(".tag") for path, _ in leaves(chart_defaults()) if path.endswith("image.tag")
    )


@pytest.mark.parametrize("image", _image_paths())
@pytest.mark.parametrize("tag", ["latest", ""])
def test_a_floating_or_missing_tag_fails_naming_the_value(image: str, tag: str) -> None:
    with pytest.raises(Exception, match=r"tag") as failure:
        render(at(values_set("minimal"), f"{image}.tag", tag))
    assert "latest" in str(failure.value) or "tag" in str(failure.value)


@pytest.mark.parametrize("image", _image_paths())
@pytest.mark.parametrize("digest", ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64])
def test_a_malformed_digest_fails_naming_it(image: str, digest: str) -> None:
    with pytest.raises(Exception, match=r"digest"):
        render(at(values_set("minimal"), f"{image}.digest", digest))


# --- service accounts, disruption budgets -----------------------------------------------------


def test_no_pod_gets_a_service_account_token(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    values_name, objects = rendered
    accounts = {o["metadata"]["name"]: o for o in of_kind(objects, "ServiceAccount")}
    for name, account in accounts.items():
        assert account.get("automountServiceAccountToken") is False, (
            f"{values_name}: ServiceAccount/{name} automounts"
        )
    problems = []
    for owner, pod in pods(objects):
        spec = pod.get("spec") or {}
        account = spec.get("serviceAccountName") or "default"
        if account not in accounts:
            problems.append(f"{ident(owner)}: runs as ServiceAccount {account!r}, not one of the chart's")
        automount = spec.get(
            "automountServiceAccountToken",
            (accounts.get(account) or {}).get("automountServiceAccountToken", True),
        )
        if automount is not False:
            problems.append(f"{ident(owner)}: mounts a service account token")
    assert not problems, f"{values_name}:\n" + "\n".join(problems)


def test_every_multi_replica_workload_has_a_disruption_budget(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    values_name, objects = rendered
    autoscaled = {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h["spec"].get(
            "minReplicas", 1
        )
        for h in of_kind(objects, "HorizontalPodAutoscaler")
    }
    budgets = of_kind(objects, "PodDisruptionBudget")
    problems, multi = [], 0
    for workload in of_kind(objects, "Deployment", "StatefulSet"):
        key = (workload["kind"], workload["metadata"]["name"])
        replicas = autoscaled.get(key, workload["spec"].get("replicas", 1))
        if replicas < 2:
            continue
        multi += 1
        pod_labels = (workload["spec"]["template"].get("metadata") or {}).get("labels") or {}
        covering = [
            b
            for b in budgets
            if selects(b["spec"].get("selector") or {"matchLabels": {"-": "-"}}, pod_labels)
        ]
        if not covering:
            problems.append(
                f"{ident(workload)} ({replicas} replicas): no PodDisruptionBudget selects its pods"
            )
        for budget in covering:
            least = budget["spec"].get("minAvailable")
            if isinstance(least, int) and least >= replicas:
                problems.append(f"{ident(budget)}: minAvailable {least} of {replicas} blocks every drain")
    assert multi, f"{values_name}: no workload runs more than one replica"
    assert not problems, f"{values_name}:\n" + "\n".join(problems)


# --- NetworkPolicies --------------------------------------------------------------------------


def _policies(objects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(default-deny policies, policies that allow something)."""
    deny, allow = [], []
    for policy in of_kind(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if spec.get("ingress") or spec.get("egress"):
            allow.append(policy)
        elif {"Ingress", "Egress"} <= set(spec.get("policyTypes") or []):
            deny.append(policy)
    return deny, allow


def test_default_deny_covers_every_pod_and_each_pod_has_its_own_allows(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    values_name, objects = rendered
    deny, allow = _policies(objects)
    assert deny, f"{values_name}: no default-deny NetworkPolicy (ingress and egress, no rule)"
    problems = []
    for owner, pod in pods(objects):
        pod_labels = (pod.get("metadata") or {}).get("labels") or {}
        if not any(selects(p["spec"].get("podSelector") or {}, pod_labels) for p in deny):
            problems.append(f"{ident(owner)}: no default-deny policy selects its pods")
        if not any(selects(p["spec"].get("podSelector") or {}, pod_labels) for p in allow):
            problems.append(
                f"{ident(owner)}: no NetworkPolicy allows it anything (it cannot even resolve DNS)"
            )
    for service in of_kind(objects, "Service"):
        selector = service["spec"].get("selector") or {}
        targets = [
            pod
            for _, pod in pods(objects)
            if selector
            and selects({"matchLabels": selector}, (pod.get("metadata") or {}).get("labels") or {})
        ]
        for pod in targets:
            pod_labels = (pod.get("metadata") or {}).get("labels") or {}
            if not any(
                p["spec"].get("ingress") and selects(p["spec"].get("podSelector") or {}, pod_labels)
                for p in allow
            ):
                problems.append(f"{ident(service)}: no NetworkPolicy lets traffic into the pods it serves")
    assert not problems, f"{values_name}:\n" + "\n".join(sorted(set(problems)))


def test_network_policies_switch_off_together() -> None:
    objects = render_set("minimal", global__networkPolicy__enabled=False)
    assert not of_kind(objects, "NetworkPolicy")


# --- secrets ------------------------------------------------------------------------------------


def _password_paths() -> list[str]:
    return sorted(
        path for path, _ in leaves(chart_defaults()) if re.search(r"password$", path.rsplit(".", 1)[-1], re.I)
    )


def test_no_secret_value_reaches_a_configmap_or_a_literal_env(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    values_name, objects = rendered
    values = values_set(values_name)
    sentinels = {}
    for path in _password_paths():  # passwords a user sets: strong, recognisable
        sentinels[path] = f"Ts7-{path.replace('.', '-')}-q9Vx2"
        values = at(values, path, sentinels[path])
    if sentinels:
        objects = render(values)
    secrets = {k: v for k, v in _secret_values(objects).items() if len(v) >= 12}
    assert secrets or sentinels, f"{values_name}: the chart renders no secret value at all to check"
    for path, sentinel in sentinels.items():
        assert any(sentinel in v for v in secrets.values()), f"{path} reaches no Secret"
    needles = {**secrets, **{f"values {p}": s for p, s in sentinels.items()}}
    for config in of_kind(objects, "ConfigMap"):
        for key, text in {**(config.get("data") or {}), **(config.get("binaryData") or {})}.items():
            for where, value in needles.items():
                assert value not in str(text), f"{values_name}: {where} appears in {ident(config)} key {key}"
    for owner, pod in pods(objects):
        for _, container in containers(pod):
            literals = [str(e.get("value", "")) for e in container.get("env") or []]
            literals += [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
            for where, value in needles.items():
                assert not any(value in text for text in literals), f"{where} is a literal in {ident(owner)}"


def test_generated_values_are_random_and_kept_across_upgrades() -> None:
    """Generated secrets differ per render (no built-in default: offline, `lookup` finds no
    Secret), while the objects stay the same; every object holding a generated value is kept
    by Helm (`helm.sh/resource-policy: keep`) so that neither an upgrade nor an uninstall
    loses the keys data was encrypted with."""
    first, second = render(values_set("minimal"), fresh=True), render(values_set("minimal"), fresh=True)
    assert sorted(map(ident, first)) == sorted(map(ident, second))
    a, b = _secret_values(first), _secret_values(second)
    generated = [k for k in a if len(a[k]) >= 16 and a[k] != b.get(k)]
    assert generated, "no Secret value is generated per release"
    later = {ident(o): o for o in second}
    for obj in first:
        payload = {k: obj.get(k) for k in ("data", "stringData", "binaryData")}
        if payload != {k: later[ident(obj)].get(k) for k in payload}:
            annotations = obj["metadata"].get("annotations") or {}
            assert annotations.get("helm.sh/resource-policy") == "keep", (
                f"{ident(obj)} is generated but not kept"
            )


# passwords a user might try to set although values hold none: each must be refused, naming it
TRIED_PASSWORDS = [
    "postgresql.password",
    "postgresql.external.password",
    "objectStore.minio.rootPassword",
    "kafka.password",
    "trino.auth.adminPassword",
]


@pytest.mark.parametrize("path", _password_paths() + TRIED_PASSWORDS)
@pytest.mark.parametrize("weak", WEAK_PASSWORDS[::2])
def test_a_weak_or_default_password_fails_naming_the_value(path: str, weak: str) -> None:
    """A password in values is refused when weak (those values.yaml declares), or at all (values
    hold no secret: generated or from an existing Secret), with a message naming it."""
    with pytest.raises(Exception) as failure:
        render(at(values_set("minimal"), path, weak))
    message = str(failure.value)
    parent, leaf = path.rsplit(".", 1)
    if path in _password_paths():
        assert "weak" in message and names_value(message, path), message
    else:
        assert leaf in message and parent.rsplit(".", 1)[-1] in message, message


# --- TLS ---------------------------------------------------------------------------------------


def test_tls_off_without_the_insecure_acknowledgement_fails_naming_both() -> None:
    with pytest.raises(Exception, match=r"global\.tls\.enabled") as failure:
        render_set("minimal", global__tls__enabled=False)
    assert "global.insecure" in str(failure.value)
    # acknowledged, the global check lets it through; a component that authenticates with
    # passwords may still refuse to run without TLS, naming the value
    try:
        objects = render_set("minimal", global__tls__enabled=False, global__insecure=True)
    except Exception as refused:
        assert "global.insecure" not in str(refused) and "global.tls.enabled" in str(refused)
    else:
        assert objects


@pytest.mark.parametrize("values_name", SETS)
def test_every_pod_with_a_service_mounts_the_release_certificate(values_name: str) -> None:
    objects = render_set(values_name)
    certificates = of_kind(objects, "Certificate")
    if values_name == "production":
        assert certificates, "cert-manager is on: no Certificate rendered"
        secret_names = {c["spec"]["secretName"] for c in certificates}
        for certificate in certificates:
            assert certificate["spec"]["issuerRef"]["name"] == "lakehouse-ca", ident(certificate)
            spec = certificate["spec"]
            assert spec.get("dnsNames") or spec.get("commonName"), f"{ident(certificate)} names no subject"
    else:
        assert not certificates
        secret_names = {"lakehouse-tls"}
    served = []
    for service in of_kind(objects, "Service"):
        selector = service["spec"].get("selector") or {}
        for owner, pod in pods(objects):
            if selector and selects(
                {"matchLabels": selector}, (pod.get("metadata") or {}).get("labels") or {}
            ):
                served.append((owner, pod))
    assert served
    for owner, pod in served:
        assert _secret_refs(pod) & secret_names, (
            f"{ident(owner)} serves without the release's certificate {secret_names}"
        )


# --- required values ---------------------------------------------------------------------------


def _required_paths() -> list[str]:
    """What the minimal values set beyond the defaults: each is required."""
    defaults = chart_defaults()
    return sorted(path for path, value in leaves(values_set("minimal")) if get(defaults, path) != value)


def test_the_chart_defaults_alone_fail_naming_what_is_missing() -> None:
    with pytest.raises(Exception, match=r"global\.tls|existingSecret|certManager"):
        render({})


@pytest.mark.parametrize("path", _required_paths())
def test_each_required_value_left_unset_fails_naming_it(path: str) -> None:
    values = at(values_set("minimal"), path, get(chart_defaults(), path, ""))
    with pytest.raises(Exception) as failure:
        render(values)
    leaf = path.rsplit(".", 1)[-1]
    assert leaf in str(failure.value), f"{path} unset: the message does not name it: {failure.value}"


# --- switches and external services -----------------------------------------------------------


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_component_switch_removes_its_objects(switch: str, production: list[dict[str, Any]]) -> None:
    names = SWITCHES[switch]
    assert _named(production, names), f"{switch}: production renders no object of {names}"
    values = at(values_set("production"), switch, False)
    for path, value in SWITCHED_TO.get(switch, {}).items():
        values = at(values, path, value)
    off = render(values)
    left = [ident(o) for o in _named(off, names)]
    assert not left, f"{switch}=false leaves {left}"
    assert off, "nothing rendered"


@pytest.mark.parametrize("service", sorted(EXTERNAL))
def test_an_external_service_replaces_the_in_chart_one(
    service: str, production: list[dict[str, Any]]
) -> None:
    spec = EXTERNAL[service]
    assert _named(production, spec["components"]), f"production renders no {spec['components']}"
    values = at(values_set("production"), spec["switch"], False)
    for path, value in spec["values"].items():
        values = at(values, path, value)
    objects = render(values)
    left = [ident(o) for o in _named(objects, spec["components"])]
    assert not left, f"{spec['switch']}=false with an external {service} still renders {left}"
    readers = [ident(owner) for owner, pod in pods(objects) if spec["secret"] in _secret_refs(pod)]
    assert readers, f"no pod reads the external {service}'s Secret {spec['secret']}"


@pytest.mark.parametrize("service", sorted(EXTERNAL))
@pytest.mark.parametrize("unset", [0, 1])
def test_an_external_service_without_its_address_or_secret_fails_naming_it(service: str, unset: int) -> None:
    spec = EXTERNAL[service]
    values = at(values_set("minimal"), spec["switch"], False)
    paths = sorted(spec["values"])
    for path in paths:
        values = at(values, path, spec["values"][path])
    missing = paths[unset]
    values = at(values, missing, "")
    with pytest.raises(Exception) as failure:
        render(values)
    assert names_value(str(failure.value), missing), f"{missing} unset: {failure.value}"


# --- production extras ----------------------------------------------------------------------------


def test_production_exposes_the_gateway_and_trino_over_tls_ingress(production: list[dict[str, Any]]) -> None:
    hosts = {}
    for ingress in of_kind(production, "Ingress"):
        tls_hosts = {h for entry in ingress["spec"].get("tls") or [] for h in entry.get("hosts") or []}
        for rule in ingress["spec"].get("rules") or []:
            hosts[rule["host"]] = rule["host"] in tls_hosts
    for host in ("trino.lakehouse.example.com", "edge.lakehouse.example.com"):
        assert host in hosts, f"no Ingress rule for {host}: {sorted(hosts)}"
        assert hosts[host], f"the Ingress for {host} serves it without TLS"


def test_production_autoscales_trino_workers(production: list[dict[str, Any]]) -> None:
    autoscalers = of_kind(production, "HorizontalPodAutoscaler")
    targets = {
        (h["spec"]["scaleTargetRef"]["kind"], h["spec"]["scaleTargetRef"]["name"]): h for h in autoscalers
    }
    workers = _named(of_kind(production, "Deployment", "StatefulSet"), ("trino-worker",))
    assert workers
    for worker in workers:
        autoscaler = targets.get((worker["kind"], worker["metadata"]["name"]))
        assert autoscaler, f"{ident(worker)} is not autoscaled"
        assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (2, 8)


def test_production_ships_service_monitors_and_alert_rules(production: list[dict[str, Any]]) -> None:
    monitors = of_kind(production, "ServiceMonitor")
    assert monitors, "metrics.serviceMonitor.enabled: no ServiceMonitor"
    services = of_kind(production, "Service")
    for monitor in monitors:
        selector = monitor["spec"].get("selector") or {}
        assert any(selects(selector, labels(s)) for s in services), f"{ident(monitor)} selects no Service"
        assert monitor["spec"].get("endpoints"), ident(monitor)
    rules = [
        r
        for rule in of_kind(production, "PrometheusRule")
        for g in rule["spec"]["groups"]
        for r in g["rules"]
    ]
    alerts = [r for r in rules if "alert" in r]
    assert alerts, "metrics.prometheusRule.enabled: no alert"
    for alert in alerts:
        assert alert.get("expr") and (alert.get("labels") or {}).get("severity"), alert.get("alert")
    none = render_set("minimal")
    assert not of_kind(none, "ServiceMonitor", "PrometheusRule"), (
        "the Prometheus Operator objects are on by default"
    )
