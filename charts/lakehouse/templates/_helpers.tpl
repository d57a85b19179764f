{{/*
The chart's shared pieces. Every component's templates use these, so that names, labels,
images, security contexts, secrets and TLS are decided in one place.

Naming: each component is "<release>-<component>" (its Deployment/StatefulSet, Service,
ServiceAccount, ConfigMaps and Secrets start with it), labelled
app.kubernetes.io/component=<component>; NetworkPolicies select peers by that label.
*/}}

{{/* "<release>-<component>": (dict "root" $ "component" "nessie") */}}
{{- define "lakehouse.name" -}}
{{- printf "%s-%s" .root.Release.Name .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The labels of every object of a component: (dict "root" $ "component" "nessie") */}}
{{- define "lakehouse.labels" -}}
{{ include "lakehouse.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lakehouse
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The labels a component's pods carry and its Services and NetworkPolicies select */}}
{{- define "lakehouse.selectorLabels" -}}
app.kubernetes.io/name: lakehouse
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
An image reference pinned by version, with the digest when one is given:
(dict "root" $ "image" .Values.nessie.image). A missing or floating tag fails the render.
*/}}
{{- define "lakehouse.image" -}}
{{- $image := .image -}}
{{- $registry := $image.registry | default .root.Values.global.imageRegistry -}}
{{- if not $image.repository -}}{{- fail "an image has no repository: set <component>.image.repository" -}}{{- end -}}
{{- if or (not $image.tag) (eq (toString $image.tag) "latest") -}}
{{- fail (printf "image %s: set a version tag (not empty, not latest) in <component>.image.tag" $image.repository) -}}
{{- end -}}
{{- $ref := printf "%s:%s" $image.repository (toString $image.tag) -}}
{{- if $registry -}}{{- $ref = printf "%s/%s" $registry $ref -}}{{- end -}}
{{- if $image.digest -}}
{{- if not (regexMatch "^sha256:[0-9a-f]{64}$" $image.digest) -}}
{{- fail (printf "image %s: digest must be sha256:<64 hex digits>, got %q" $image.repository $image.digest) -}}
{{- end -}}
{{- $ref = printf "%s@%s" $ref $image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/*
Pod Security "restricted", for every pod: non-root, seccomp RuntimeDefault. uid/gid from
.Values.global.securityContext unless the component's image needs its own (pass "uid").
(dict "root" $) or (dict "root" $ "uid" 1001)
*/}}
{{- define "lakehouse.podSecurityContext" -}}
{{- $uid := .uid | default .root.Values.global.securityContext.runAsUser -}}
runAsNonRoot: true
runAsUser: {{ $uid }}
runAsGroup: {{ $uid }}
fsGroup: {{ $uid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Every container: read-only root filesystem, no privilege escalation, no capabilities */}}
{{- define "lakehouse.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/*
A generated secret value that survives upgrades: the value already in the cluster's Secret
<name> under <key> when there is one (lookup), else a new random one. `helm template` has no
cluster, so it renders a new value each time. (dict "root" $ "name" "rel-trino-auth" "key" "shared-secret")
The value is base64-encoded, ready for a Secret's data.
*/}}
{{- define "lakehouse.generatedSecret" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .name -}}
{{- if and $existing (hasKey $existing.data .key) -}}
{{- index $existing.data .key -}}
{{- else -}}
{{- randAlphaNum (int (.length | default 40)) | b64enc -}}
{{- end -}}
{{- end -}}

{{/*
A password a user provides in values: refused when weak (shorter than 16 characters, or a
well-known default). (dict "value" .Values.x.password "name" "x.password")
Renders nothing; fails the render with a message naming the value.
*/}}
{{- define "lakehouse.checkPassword" -}}
{{- $value := toString .value -}}
{{- $weak := list "password" "changeme" "admin" "minioadmin" "secret" "postgres" "trino" "nessie" "kafka" -}}
{{- if lt (len $value) 16 -}}
{{- fail (printf "%s is too weak: use at least 16 characters, or leave it empty to have one generated" .name) -}}
{{- end -}}
{{- range $weak -}}
{{- if contains . (lower $value) -}}
{{- fail (printf "%s is too weak: it contains the default word %q" $.name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
TLS: the Secret (kubernetes.io/tls, with ca.crt) that holds the certificate of every service of
the release, from cert-manager (global.tls.certManager) or provided (global.tls.existingSecret).
TLS can be turned off only with global.insecure=true, an explicit acknowledgement.
*/}}
{{- define "lakehouse.tlsSecret" -}}
{{- if .Values.global.tls.existingSecret -}}
{{- .Values.global.tls.existingSecret -}}
{{- else -}}
{{- printf "%s-tls" .Release.Name -}}
{{- end -}}
{{- end -}}

{{- define "lakehouse.tlsEnabled" -}}
{{- if .Values.global.tls.enabled -}}true{{- end -}}
{{- end -}}

{{/* The checks of global values every render runs (called from validate.yaml) */}}
{{- define "lakehouse.validateGlobal" -}}
{{- if and (not .Values.global.tls.enabled) (not .Values.global.insecure) -}}
{{- fail "global.tls.enabled=false turns TLS off on every hop: set global.insecure=true to acknowledge it" -}}
{{- end -}}
{{- if and .Values.global.tls.enabled (not .Values.global.tls.certManager.enabled) (not .Values.global.tls.existingSecret) -}}
{{- fail "TLS needs certificates: set global.tls.existingSecret (a kubernetes.io/tls Secret with ca.crt) or global.tls.certManager.enabled=true with global.tls.certManager.issuerRef" -}}
{{- end -}}
{{- end -}}

{{/* The ServiceAccount of a component: no API token unless the component needs one */}}
{{- define "lakehouse.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "lakehouse.name" . }}
  labels:
    {{- include "lakehouse.labels" . | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{/*
A PodDisruptionBudget for a component: (dict "root" $ "component" "trino-worker" "minAvailable" 1)
or with "maxUnavailable".
*/}}
{{- define "lakehouse.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "lakehouse.name" . }}
  labels:
    {{- include "lakehouse.labels" . | nindent 4 }}
spec:
  {{- if hasKey . "maxUnavailable" }}
  maxUnavailable: {{ .maxUnavailable }}
  {{- else }}
  minAvailable: {{ .minAvailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "lakehouse.selectorLabels" . | nindent 6 }}
{{- end -}}


{{/*
checkov's CKV_K8S_43 (images by digest), skipped on an object only while one of its images has no
digest, with the reason; with digests (the production values) the check runs and passes.
Renders one annotation line or nothing: (dict "images" (list .Values.trino.image) "n" 9)
*/}}
{{- define "lakehouse.checkovDigestSkip" -}}
{{- $missing := list -}}
{{- range .images -}}{{- if not .digest -}}{{- $missing = append $missing .repository -}}{{- end -}}{{- end -}}
{{- if $missing -}}
checkov.io/skip{{ .n }}: {{ printf "CKV_K8S_43=digests are optional in values and none is set for %s: each is pinned by its version tag (never latest; the schema refuses it); set <component>.image.digest to pin the bytes, as the production values do" (join ", " ($missing | uniq)) | quote }}
{{- end -}}
{{- end -}}
