{{/*
Where PostgreSQL is, for every consumer (Nessie, the device registry, Airflow, Superset, MLflow):
the release's server (component postgresql) or postgresql.external.*. Call with the root ($).
Passwords are in the Secret `lakehouse.postgresql.secret`, key <database>-password.
*/}}

{{/* The host: <release>-postgresql.<namespace>.svc, else postgresql.external.host */}}
{{- define "lakehouse.postgresql.host" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s.%s.svc" (include "lakehouse.name" (dict "root" . "component" "postgresql")) .Release.Namespace -}}
{{- else -}}
{{- required "postgresql.external.host: PostgreSQL is not in the release (postgresql.enabled=false): name the external server's host" .Values.postgresql.external.host -}}
{{- end -}}
{{- end -}}

{{/* The port: 5432, else postgresql.external.port */}}
{{- define "lakehouse.postgresql.port" -}}
{{- if .Values.postgresql.enabled -}}5432{{- else -}}{{ .Values.postgresql.external.port | default 5432 | int }}{{- end -}}
{{- end -}}

{{/* The client's sslmode: verify-full (the release's CA), else postgresql.external.sslmode */}}
{{- define "lakehouse.postgresql.sslmode" -}}
{{- if .Values.postgresql.enabled -}}verify-full{{- else -}}{{ .Values.postgresql.external.sslmode | default "verify-full" }}{{- end -}}
{{- end -}}

{{/* The Secret with <database>-password per database */}}
{{- define "lakehouse.postgresql.secret" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "%s-auth" (include "lakehouse.name" (dict "root" . "component" "postgresql")) -}}
{{- else -}}
{{- required "postgresql.external.existingSecret: PostgreSQL is not in the release (postgresql.enabled=false): name a Secret with <database>-password per database" .Values.postgresql.external.existingSecret -}}
{{- end -}}
{{- end -}}

{{/*
A JDBC URL of one database, TLS verified against the release's CA mounted at
/etc/lakehouse/tls/ca.crt: (dict "root" $ "database" "nessie")
*/}}
{{- define "lakehouse.postgresql.jdbcUrl" -}}
{{- $root := .root -}}
{{- printf "jdbc:postgresql://%s:%s/%s?sslmode=%s&sslrootcert=/etc/lakehouse/tls/ca.crt" (include "lakehouse.postgresql.host" $root) (include "lakehouse.postgresql.port" $root) .database (include "lakehouse.postgresql.sslmode" $root) -}}
{{- end -}}

{{/* The checks of the PostgreSQL values (renders nothing; fails naming the value) */}}
{{- define "lakehouse.postgresql.validate" -}}
{{- range .Values.postgresql.databases -}}
{{- if not (regexMatch "^[a-z_][a-z0-9_]{0,62}$" (toString .)) -}}
{{- fail (printf "postgresql.databases: %q is not a database name (lower-case letters, digits, _)" (toString .)) -}}
{{- end -}}
{{- end -}}
{{- if not .Values.postgresql.enabled -}}
{{- $_ := include "lakehouse.postgresql.host" . -}}
{{- $_ := include "lakehouse.postgresql.secret" . -}}
{{- end -}}
{{- end -}}
