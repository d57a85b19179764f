{{/*
Apache Kafka of the release (component kafka): KRaft, every pod broker and controller,
SASL_SSL (SCRAM-SHA-512) on 9092, the controllers' quorum on 9093. Call with the root ($).
*/}}

{{/* The headless Service that names each pod: <release>-kafka-headless */}}
{{- define "lakehouse.kafka.headless" -}}
{{- printf "%s-headless" (include "lakehouse.name" (dict "root" . "component" "kafka")) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Pod <ordinal>'s stable host name: (dict "root" $ "ordinal" 0) */}}
{{- define "lakehouse.kafka.podHost" -}}
{{- printf "%s-%d.%s.%s.svc" (include "lakehouse.name" (dict "root" .root "component" "kafka")) (int .ordinal) (include "lakehouse.kafka.headless" .root) .root.Release.Namespace -}}
{{- end -}}

{{/* controller.quorum.bootstrap.servers: every pod's controller listener */}}
{{- define "lakehouse.kafka.quorum" -}}
{{- $hosts := list -}}
{{- range $i := until (int .Values.kafka.replicas) -}}
{{- $hosts = append $hosts (printf "%s:%v" (include "lakehouse.kafka.podHost" (dict "root" $ "ordinal" $i)) $.Values.kafka.config.controller_port) -}}
{{- end -}}
{{- join "," $hosts -}}
{{- end -}}

{{/* The Secret of the SCRAM credentials: <release>-kafka-scram, or kafka.existingSecret */}}
{{- define "lakehouse.kafka.scramSecret" -}}
{{- .Values.kafka.existingSecret | default (printf "%s-scram" (include "lakehouse.name" (dict "root" . "component" "kafka"))) -}}
{{- end -}}

{{/* The platform's Kafka account (SCRAM user; platform.kafkaUser) */}}
{{- define "lakehouse.kafka.clientUser" -}}
{{- .Values.platform.kafkaUser | default "lakehouse" -}}
{{- end -}}

{{/*
Kafka's server.properties values: kafka.config with controller_quorum set to the release's
pods when left empty (renderConfig still refuses any other empty value). YAML.
*/}}
{{- define "lakehouse.kafka.configValues" -}}
{{- $values := deepCopy .Values.kafka.config -}}
{{- if and (hasKey $values "controller_quorum") (eq (toString (index $values "controller_quorum" | default "")) "") -}}
{{- $_ := set $values "controller_quorum" (include "lakehouse.kafka.quorum" .) -}}
{{- end -}}
{{- toYaml $values -}}
{{- end -}}

{{/* The checks of the Kafka values (renders nothing; fails naming the value) */}}
{{- define "lakehouse.kafka.validate" -}}
{{- if .Values.kafka.enabled -}}
{{- if lt (int .Values.kafka.replicas) 1 -}}
{{- fail "kafka.replicas: at least 1 (3 for a quorum that survives the loss of one pod)" -}}
{{- end -}}
{{- if not (include "lakehouse.tlsEnabled" .) -}}
{{- fail "kafka.enabled: the release's Kafka is SASL_SSL only and needs TLS (global.tls.enabled=true)" -}}
{{- end -}}
{{- else -}}
{{- $_ := required "kafka.external.bootstrap: Kafka is not in the release (kafka.enabled=false): name the external brokers (HOST:PORT, comma-separated)" .Values.kafka.external.bootstrap -}}
{{- $_ := required "kafka.external.existingSecret: Kafka is not in the release (kafka.enabled=false): name a Secret with username and password (SCRAM)" .Values.kafka.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
Nessie's application.properties values: nessie.config with jdbc_url and s3_endpoint set to the
release's PostgreSQL (or postgresql.external) and object store, and warehouse_location to
s3://<objectStore.bucket>/, when left empty. YAML.
*/}}
{{- define "lakehouse.nessie.configValues" -}}
{{- $values := deepCopy .Values.nessie.config -}}
{{- if and (hasKey $values "jdbc_url") (eq (toString (index $values "jdbc_url" | default "")) "") -}}
{{- $_ := set $values "jdbc_url" (include "lakehouse.postgresql.jdbcUrl" (dict "root" . "database" (.Values.nessie.database | default "nessie"))) -}}
{{- end -}}
{{- if and (hasKey $values "s3_endpoint") (eq (toString (index $values "s3_endpoint" | default "")) "") -}}
{{- $_ := set $values "s3_endpoint" (include "lakehouse.objectStore.endpoint" .) -}}
{{- end -}}
{{- if and (hasKey $values "warehouse_location") (eq (toString (index $values "warehouse_location" | default "")) "") -}}
{{- $_ := set $values "warehouse_location" (printf "s3://%s/" .Values.objectStore.bucket) -}}
{{- end -}}
{{- toYaml $values -}}
{{- end -}}
