{{/*
The pieces Trino and the platform's own services (sink, gateway, dbt, maintenance) share: where
the release's services are, which Secrets hold their credentials, and the environment and
volumes of a platform container. Every address and Secret name of another component is decided
here, once.
*/}}

{{/* "https" on every hop unless TLS is off (global.insecure acknowledged) */}}
{{- define "lakehouse.scheme" -}}
{{- if include "lakehouse.tlsEnabled" . -}}https{{- else -}}http{{- end -}}
{{- end -}}

{{/* A service of the release by the name its certificate holds: <release>-<component>.<namespace>.svc */}}
{{- define "lakehouse.serviceHost" -}}
{{- printf "%s.%s.svc" (include "lakehouse.name" .) .root.Release.Namespace -}}
{{- end -}}

{{/* Nessie's base URL (its Iceberg REST endpoint is <this>/iceberg, its API v2 <this>/api/v2) */}}
{{- define "lakehouse.nessie.url" -}}
{{- printf "%s://%s:19120" (include "lakehouse.scheme" .) (include "lakehouse.serviceHost" (dict "root" . "component" "nessie")) -}}
{{- end -}}

{{/* OPA's base URL */}}
{{- define "lakehouse.opa.url" -}}
{{- printf "%s://%s:8181" (include "lakehouse.scheme" .) (include "lakehouse.serviceHost" (dict "root" . "component" "opa")) -}}
{{- end -}}

{{/* Kafka's bootstrap servers: the release's brokers, else kafka.external.bootstrap */}}
{{- define "lakehouse.kafka.bootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s:9092" (include "lakehouse.serviceHost" (dict "root" . "component" "kafka")) -}}
{{- else -}}
{{- required "kafka.external.bootstrap: the external Kafka's HOST:PORT list" .Values.kafka.external.bootstrap -}}
{{- end -}}
{{- end -}}

{{/*
The Secret with the platform's Kafka password and its key, as YAML {name, username, key}: the
release's SCRAM Secret (key <platform.kafkaUser>-password), else the external one's username
and password.
*/}}
{{- define "lakehouse.kafka.secret" -}}
{{- if .Values.kafka.enabled -}}
name: {{ include "lakehouse.kafka.scramSecret" . }}
username: {{ include "lakehouse.kafka.clientUser" . }}
key: {{ printf "%s-password" (include "lakehouse.kafka.clientUser" .) }}
{{- else -}}
name: {{ required "kafka.external.existingSecret: a Secret with username and password of the external Kafka" .Values.kafka.external.existingSecret }}
username: ""
key: password
{{- end -}}
{{- end -}}

{{/* The Secret of Trino's password.db and users' passwords */}}
{{- define "lakehouse.trino.authSecret" -}}
{{- .Values.trino.auth.existingSecret | default (printf "%s-auth" (include "lakehouse.name" (dict "root" . "component" "trino"))) -}}
{{- end -}}

{{/* The Secret of the keystore's master key */}}
{{- define "lakehouse.platform.keysSecret" -}}
{{- .Values.platform.masterKey.existingSecret | default (include "lakehouse.name" (dict "root" . "component" "platform-keys")) -}}
{{- end -}}

{{/* The shared state's PersistentVolumeClaim */}}
{{- define "lakehouse.platform.stateClaim" -}}
{{- .Values.platform.state.existingClaim | default (include "lakehouse.name" (dict "root" . "component" "platform-state")) -}}
{{- end -}}

{{/*
The values of Trino's catalog template: trino.catalog with rest_uri and s3_endpoint filled in
with the release's Nessie and object store when left empty (YAML; renderConfig still refuses
any empty value). A rest_uri left empty while Nessie is not in the release stays empty, so the
render fails naming it; a value removed (null) is not filled in either.
*/}}
{{- define "lakehouse.trino.catalogValues" -}}
{{- $values := deepCopy .Values.trino.catalog -}}
{{- if and (hasKey $values "rest_uri") (eq (toString (index $values "rest_uri" | default "")) "") .Values.nessie.enabled -}}
{{- $_ := set $values "rest_uri" (printf "%s/iceberg" (include "lakehouse.nessie.url" .)) -}}
{{- end -}}
{{- if and (hasKey $values "s3_endpoint") (eq (toString (index $values "s3_endpoint" | default "")) "") -}}
{{- $_ := set $values "s3_endpoint" (include "lakehouse.objectStore.endpoint" .) -}}
{{- end -}}
{{- toYaml $values -}}
{{- end -}}

{{/* The values of Trino's access-control template: opa_url defaults to the release's OPA */}}
{{- define "lakehouse.trino.accessControlValues" -}}
{{- $values := deepCopy .Values.trino.accessControl -}}
{{- if and (hasKey $values "opa_url") (eq (toString (index $values "opa_url" | default "")) "") .Values.opa.enabled -}}
{{- $_ := set $values "opa_url" (include "lakehouse.opa.url" .) -}}
{{- end -}}
{{- toYaml $values -}}
{{- end -}}

{{/* The release's CA certificate, mounted in every platform container */}}
{{- define "lakehouse.platform.caFile" -}}/etc/lakehouse/tls/ca.crt{{- end -}}

{{/*
The environment of a platform container (the cluster profile's settings, LAKEHOUSE_*): the
catalog (Nessie), the object store, the keystore, the project, and what the service "uses"
of Trino ("trino": dbt) and Kafka ("kafka": the sink). No secret is in it: the settings read
each from a file of the secrets directory (lakehouse.platform.volumes).
(dict "root" $ "uses" (list "kafka"))
*/}}
{{- define "lakehouse.platform.env" -}}
{{- $root := .root -}}
{{- $uses := .uses | default list -}}
{{- $kafka := include "lakehouse.kafka.secret" $root | fromYaml -}}
{{- $catalog := include "lakehouse.trino.catalogValues" $root | fromYaml -}}
- name: LAKEHOUSE_PROFILE
  value: cluster
- name: LAKEHOUSE_HOME
  value: /var/lib/lakehouse
- name: LAKEHOUSE_PROJECT_DIR
  value: {{ $root.Values.platform.projectDir | quote }}
- name: LAKEHOUSE_SECRETS_DIR
  value: /var/run/secrets/lakehouse
- name: HOME
  value: /tmp
- name: LAKEHOUSE_CATALOG__URI
  value: {{ $catalog.rest_uri | quote }}
- name: LAKEHOUSE_CATALOG__WAREHOUSE
  value: {{ $catalog.warehouse | quote }}
{{- /* Nessie's API v2 (write-audit-publish branches): beside its Iceberg REST endpoint */}}
{{- if hasSuffix "/iceberg" (toString $catalog.rest_uri) }}
- name: LAKEHOUSE_CATALOG__NESSIE_API
  value: {{ printf "%s/api/v2" (trimSuffix "/iceberg" (toString $catalog.rest_uri)) | quote }}
{{- end }}
- name: LAKEHOUSE_STORAGE__TYPE
  value: s3
- name: LAKEHOUSE_STORAGE__ENDPOINT
  value: {{ $catalog.s3_endpoint | quote }}
- name: LAKEHOUSE_STORAGE__REGION
  value: {{ $root.Values.objectStore.region | quote }}
- name: LAKEHOUSE_STORAGE__BUCKET
  value: {{ $root.Values.objectStore.bucket | quote }}
- name: LAKEHOUSE_STORAGE__SSE
  value: {{ get (dict "KMS" "aws:kms" "S3" "AES256" "NONE" "none") (toString $catalog.s3_sse_type) | default "aws:kms" | quote }}
{{- if and (has "trino" $uses) $root.Values.trino.enabled }}
- name: LAKEHOUSE_ENGINE__TYPE
  value: trino
- name: LAKEHOUSE_ENGINE__TRINO_HOST
  value: {{ include "lakehouse.serviceHost" (dict "root" $root "component" "trino") }}
- name: LAKEHOUSE_ENGINE__TRINO_PORT
  value: "8443"
- name: LAKEHOUSE_ENGINE__TRINO_USER
  value: {{ $root.Values.platform.trinoUser | quote }}
- name: LAKEHOUSE_ENGINE__TRINO_CA_FILE
  value: {{ include "lakehouse.platform.caFile" $root }}
- name: LAKEHOUSE_DBT__WAP_BRANCH
  value: {{ $root.Values.trino.wapBranch | quote }}
{{- end }}
{{- if has "kafka" $uses }}
- name: LAKEHOUSE_BROKER__BOOTSTRAP
  value: {{ include "lakehouse.kafka.bootstrap" $root | quote }}
- name: LAKEHOUSE_BROKER__SECURITY_PROTOCOL
  value: SASL_SSL
- name: LAKEHOUSE_BROKER__SASL_MECHANISM
  value: SCRAM-SHA-512
{{- if $kafka.username }}
- name: LAKEHOUSE_BROKER__USERNAME
  value: {{ $kafka.username | quote }}
{{- end }}
- name: LAKEHOUSE_BROKER__CA_FILE
  value: {{ include "lakehouse.platform.caFile" $root }}
{{- end }}
- name: LAKEHOUSE_KEYS__KEYSTORE_FILE
  value: /var/lib/lakehouse/state/keys/keystore.json
# the release's CA for the HTTPS clients of the release's services (Nessie's REST catalog and
# API, Trino; the release's MinIO): an external object store keeps the system's CAs
- name: REQUESTS_CA_BUNDLE
  value: {{ include "lakehouse.platform.caFile" $root }}
{{- if $root.Values.objectStore.minio.enabled }}
- name: SSL_CERT_FILE
  value: {{ include "lakehouse.platform.caFile" $root }}
- name: AWS_CA_BUNDLE
  value: {{ include "lakehouse.platform.caFile" $root }}
{{- end }}
{{- end -}}

{{/*
The volumes of a platform pod: the shared state, the secrets directory the settings read
(LAKEHOUSE_SECRETS_DIR: one file per secret setting, lakehouse_<section>__<field>, projected
from the Secrets that hold them: the master key, the object store's keys, and only for the
services that use them Trino's operator password and Kafka's password), the release's CA, /tmp.
(dict "root" $ "uses" (list "kafka"))
*/}}
{{- define "lakehouse.platform.volumes" -}}
{{- $root := .root -}}
{{- $uses := .uses | default list -}}
{{- $s3 := include "lakehouse.objectStore.secret" $root | fromYaml -}}
{{- $kafka := include "lakehouse.kafka.secret" $root | fromYaml -}}
- name: state
  persistentVolumeClaim:
    claimName: {{ include "lakehouse.platform.stateClaim" $root }}
- name: secrets
  projected:
    defaultMode: 0440
    sources:
      - secret:
          name: {{ include "lakehouse.platform.keysSecret" $root }}
          items:
            - {key: master-key, path: lakehouse_keys__master_key}
      - secret:
          name: {{ $s3.name }}
          items:
            - {key: {{ $s3.accessKey }}, path: lakehouse_storage__access_key_id}
            - {key: {{ $s3.secretKey }}, path: lakehouse_storage__secret_access_key}
      {{- if and (has "trino" $uses) $root.Values.trino.enabled }}
      - secret:
          name: {{ include "lakehouse.trino.authSecret" $root }}
          items:
            - {key: {{ printf "%s-password" $root.Values.platform.trinoUser }}, path: lakehouse_engine__trino_password}
      {{- end }}
      {{- if has "kafka" $uses }}
      - secret:
          name: {{ $kafka.name }}
          items:
            - {key: {{ $kafka.key }}, path: lakehouse_broker__password}
            {{- if not $kafka.username }}
            - {key: username, path: lakehouse_broker__username}
            {{- end }}
      {{- end }}
- name: tls
  secret:
    secretName: {{ include "lakehouse.tlsSecret" $root }}
    defaultMode: 0444
    items:
      - {key: ca.crt, path: ca.crt}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "lakehouse.platform.volumeMounts" -}}
- {name: state, mountPath: /var/lib/lakehouse}
- {name: secrets, mountPath: /var/run/secrets/lakehouse, readOnly: true}
- {name: tls, mountPath: /etc/lakehouse/tls, readOnly: true}
- {name: tmp, mountPath: /tmp}
{{- end -}}

{{/*
The pod-level settings every platform pod shares: (dict "root" $ "component" "sink")
*/}}
{{- define "lakehouse.platform.podSpec" -}}
serviceAccountName: {{ include "lakehouse.name" . }}
automountServiceAccountToken: false
enableServiceLinks: false
securityContext:
  {{- include "lakehouse.podSecurityContext" (dict "root" .root) | nindent 2 }}
{{- with .root.Values.global.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The port of a URL (its scheme's default when it names none) */}}
{{- define "lakehouse.urlPort" -}}
{{- $url := urlParse . -}}
{{- $host := $url.host -}}
{{- if regexMatch ":[0-9]+$" $host -}}
{{- regexFind "[0-9]+$" $host -}}
{{- else if eq $url.scheme "http" -}}80
{{- else -}}443
{{- end -}}
{{- end -}}

{{/*
The peers of a platform service, as JSON (list component port external): the catalog, the
object store, Kafka, PostgreSQL, Trino, OPA, each only when the service uses it. An external
service (not in the release: Nessie or OPA switched off and trino.catalog.rest_uri or
trino.accessControl.opa_url pointing elsewhere, an external object store, PostgreSQL or Kafka)
is reached on its own port, wherever it is.
(dict "root" $ "uses" (list "nessie" "minio" "kafka"))
*/}}
{{- define "lakehouse.platform.peers" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $peers := list -}}
{{- range .uses -}}
{{- if eq . "nessie" -}}
{{- if $v.nessie.enabled }}{{ $peers = append $peers (list "nessie" 19120 false) }}
{{- else if $v.trino.catalog.rest_uri }}{{ $peers = append $peers (list "nessie" (include "lakehouse.urlPort" $v.trino.catalog.rest_uri | int) true) }}{{ end -}}
{{- end -}}
{{- if eq . "opa" -}}
{{- if $v.opa.enabled }}{{ $peers = append $peers (list "opa" 8181 false) }}
{{- else if $v.trino.accessControl.opa_url }}{{ $peers = append $peers (list "opa" (include "lakehouse.urlPort" $v.trino.accessControl.opa_url | int) true) }}{{ end -}}
{{- end -}}
{{- if eq . "trino" }}{{ $peers = append $peers (list "trino" 8443 false) }}{{ end -}}
{{- if eq . "minio" -}}
{{- if $v.objectStore.minio.enabled }}{{ $peers = append $peers (list "minio" 9000 false) }}
{{- else }}{{ $peers = append $peers (list "minio" (include "lakehouse.urlPort" (include "lakehouse.objectStore.endpoint" $root) | int) true) }}{{ end -}}
{{- end -}}
{{- if eq . "kafka" -}}
{{- if $v.kafka.enabled }}{{ $peers = append $peers (list "kafka" 9092 false) }}
{{- else }}{{ $peers = append $peers (list "kafka" (regexFind "[0-9]+$" (first (splitList "," (include "lakehouse.kafka.bootstrap" $root))) | default "9092" | int) true) }}{{ end -}}
{{- end -}}
{{- if eq . "postgresql" -}}
{{- if $v.postgresql.enabled }}{{ $peers = append $peers (list "postgresql" 5432 false) }}
{{- else }}{{ $peers = append $peers (list "postgresql" ($v.postgresql.external.port | int) true) }}{{ end -}}
{{- end -}}
{{- end -}}
{{- toJson $peers -}}
{{- end -}}

{{/* Renders nothing; fails when TLS is off: Trino's passwords, the gateway's devices and Kafka's SASL_SSL need it */}}
{{- define "lakehouse.platform.requireTls" -}}
{{- if not (include "lakehouse.tlsEnabled" .root) -}}
{{- fail (printf "%s needs TLS (global.tls.enabled=true): it authenticates its clients with passwords or tokens, which never travel in clear" .component) -}}
{{- end -}}
{{- end -}}

{{/* "true" when any of the platform's services (or Trino, which reads its keystore) is in the release */}}
{{- define "lakehouse.platform.used" -}}
{{- $p := .Values.platform -}}
{{- if or $p.sink.enabled $p.gateway.enabled $p.dbt.enabled $p.maintenance.enabled .Values.trino.enabled -}}true{{- end -}}
{{- end -}}

{{/*
A platform container's common part: image, security context, the settings' environment and the
volumes' mounts. (dict "root" $ "name" "sink" "uses" (list "kafka") "resources" .Values.platform.sink.resources)
followed by the caller's own env entries ("env": list of maps) and mounts ("mounts").
*/}}
{{- define "lakehouse.platform.container" -}}
- name: {{ .name }}
  image: {{ include "lakehouse.image" (dict "root" .root "image" .root.Values.platform.image) }}
  imagePullPolicy: IfNotPresent
  {{- with .args }}
  args:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  env:
    {{- include "lakehouse.platform.env" (dict "root" .root "uses" .uses) | nindent 4 }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  securityContext:
    {{- include "lakehouse.containerSecurityContext" .root | nindent 4 }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  volumeMounts:
    {{- include "lakehouse.platform.volumeMounts" .root | nindent 4 }}
    {{- with .mounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* Ingress rule: Prometheus, from any namespace, on a metrics port (only with ServiceMonitors) */}}
{{- define "lakehouse.netpol.prometheus" -}}
{{- if .root.Values.metrics.serviceMonitor.enabled }}
- from:
    - namespaceSelector: {}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end }}
{{- end -}}

{{/* Ingress rule: the ingress controller's namespace on a port */}}
{{- define "lakehouse.netpol.ingressController" -}}
- from:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .root.Values.global.networkPolicy.ingressNamespaceSelector | nindent 10 }}
  ports:
    - {protocol: TCP, port: {{ .port }}}
{{- end -}}

{{/* A platform service's egress rules: DNS and each peer of lakehouse.platform.peers */}}
{{- define "lakehouse.netpol.platformEgress" -}}
{{- $root := .root -}}
{{- include "lakehouse.netpol.dns" $root }}
{{- range include "lakehouse.platform.peers" . | fromJsonArray }}
{{- include "lakehouse.netpol.egress" (dict "root" $root "component" (index . 0) "ports" (list (index . 1)) "external" (index . 2)) }}
{{- end }}
{{- end -}}

{{/* Spread a component's replicas over nodes when the cluster can (a preference, never a block) */}}
{{- define "lakehouse.spread" -}}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "lakehouse.selectorLabels" . | nindent 8 }}
{{- end -}}
