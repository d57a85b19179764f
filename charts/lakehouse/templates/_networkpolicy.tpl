{{/*
NetworkPolicy pieces of the data services (MinIO, PostgreSQL, Nessie, OPA, Kafka and their setup
Jobs). Peers are chosen by their app.kubernetes.io/component label within the release.
*/}}

{{/*
An ingress rule: the pods of the release's components "from" may reach "ports".
(dict "root" $ "from" (list "trino" "nessie") "ports" (list 9000))
*/}}
{{- define "lakehouse.netpol.ingress" -}}
- from:
    {{- range .from }}
    - podSelector:
        matchLabels:
          {{- include "lakehouse.selectorLabels" (dict "root" $.root "component" .) | nindent 10 }}
    {{- end }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end -}}

{{/* The egress rule to the cluster's DNS (global.networkPolicy.dns*Selector), port 53 */}}
{{- define "lakehouse.netpol.dns" -}}
- to:
    - namespaceSelector:
        matchLabels:
          {{- toYaml .Values.global.networkPolicy.dnsNamespaceSelector | nindent 10 }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.global.networkPolicy.dnsPodSelector | nindent 10 }}
  ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
{{- end -}}

{{/*
An egress rule to a component of the release on "ports", or, when "external" is true (the
service is outside the release), to any address on those ports.
(dict "root" $ "component" "postgresql" "ports" (list 5432) "external" false)
*/}}
{{- define "lakehouse.netpol.egress" -}}
{{- if .external }}
- ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- else }}
- to:
    - podSelector:
        matchLabels:
          {{- include "lakehouse.selectorLabels" (dict "root" .root "component" .component) | nindent 10 }}
  ports:
    {{- range .ports }}
    - {protocol: TCP, port: {{ . }}}
    {{- end }}
{{- end }}
{{- end -}}

{{/* The object store's port: 9000 (MinIO), else objectStore.external.endpoint's */}}
{{- define "lakehouse.objectStore.port" -}}
{{- if .Values.objectStore.minio.enabled -}}9000
{{- else -}}
{{- $url := urlParse (include "lakehouse.objectStore.endpoint" .) -}}
{{- if regexMatch ":[0-9]+$" $url.host -}}{{ regexFind "[0-9]+$" $url.host }}{{- else if eq $url.scheme "http" -}}80{{- else -}}443{{- end -}}
{{- end -}}
{{- end -}}

{{/* The components that reach the object store (S3) */}}
{{- define "lakehouse.netpol.objectStoreClients" -}}
{{- $c := list "nessie" "trino" "trino-worker" "sink" "gateway" "dbt" "maintenance" -}}
{{- if .Values.mlflow.enabled }}{{ $c = append $c "mlflow" }}{{ end -}}
{{- toJson $c -}}
{{- end -}}

{{/* The components that reach PostgreSQL */}}
{{- define "lakehouse.netpol.postgresqlClients" -}}
{{- $c := list "nessie" "gateway" -}}
{{- range list "airflow" "superset" "mlflow" -}}
{{- if (index $.Values . "enabled") }}{{ $c = append $c . }}{{ end -}}
{{- end -}}
{{- toJson $c -}}
{{- end -}}

{{/*
The Secret (kubernetes.io/tls: tls.crt, tls.key, ca.crt) of the client certificate Trino presents
to OPA: opa.clientTls.existingSecret, else <release>-opa-client (cert-manager), else the
release's own certificate (global.tls.existingSecret: OPA admits it only if its subject is CN=trino).
*/}}
{{- define "lakehouse.opa.clientSecret" -}}
{{- if .Values.opa.clientTls.existingSecret -}}
{{- .Values.opa.clientTls.existingSecret -}}
{{- else if .Values.global.tls.certManager.enabled -}}
{{- printf "%s-client" (include "lakehouse.name" (dict "root" . "component" "opa")) -}}
{{- else -}}
{{- include "lakehouse.tlsSecret" . -}}
{{- end -}}
{{- end -}}
