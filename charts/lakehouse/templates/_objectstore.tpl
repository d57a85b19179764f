{{/*
The object store for the components of this chart's data services (Nessie, the MinIO setup Job):
the release's MinIO (component minio) or objectStore.external.*. Call with the root ($).
*/}}

{{/* MinIO's root credentials Secret (keys root-user, root-password) */}}
{{- define "lakehouse.minio.authSecret" -}}
{{- .Values.objectStore.minio.existingSecret | default (printf "%s-auth" (include "lakehouse.name" (dict "root" . "component" "minio"))) -}}
{{- end -}}

{{/* MinIO's KMS key Secret (key kms-key: "<name>:<base64 of 32 bytes>") */}}
{{- define "lakehouse.minio.kmsSecret" -}}
{{- .Values.objectStore.minio.kms.existingSecret | default (printf "%s-kms" (include "lakehouse.name" (dict "root" . "component" "minio"))) -}}
{{- end -}}

{{/* The S3 endpoint: https://<release>-minio.<namespace>.svc:9000, else objectStore.external.endpoint */}}
{{- define "lakehouse.objectStore.endpoint" -}}
{{- if .Values.objectStore.minio.enabled -}}
{{- printf "%s://%s.%s.svc:9000" (ternary "https" "http" (not (not .Values.global.tls.enabled))) (include "lakehouse.name" (dict "root" . "component" "minio")) .Release.Namespace -}}
{{- else -}}
{{- required "objectStore.external.endpoint: MinIO is not in the release (objectStore.minio.enabled=false): name the external S3 endpoint (https://HOST:PORT)" .Values.objectStore.external.endpoint -}}
{{- end -}}
{{- end -}}

{{/* The platform's own MinIO user (keys access-key, secret-key): the bucket, nothing else */}}
{{- define "lakehouse.minio.dataSecret" -}}
{{- printf "%s-data" (include "lakehouse.name" (dict "root" . "component" "minio")) -}}
{{- end -}}

{{/*
The Secret with the S3 key pair and its keys, as YAML {name, accessKey, secretKey}: the
release's MinIO user that may reach only objectStore.bucket (made by the setup Job; root's
credentials stay with MinIO and that Job), else objectStore.external.existingSecret.
*/}}
{{- define "lakehouse.objectStore.secret" -}}
{{- if .Values.objectStore.minio.enabled -}}
name: {{ include "lakehouse.minio.dataSecret" . }}
accessKey: access-key
secretKey: secret-key
{{- else -}}
name: {{ required "objectStore.external.existingSecret: MinIO is not in the release (objectStore.minio.enabled=false): name a Secret with access-key and secret-key of the external object store" .Values.objectStore.external.existingSecret }}
accessKey: access-key
secretKey: secret-key
{{- end -}}
{{- end -}}

{{/* The checks of the object store values (renders nothing; fails naming the value) */}}
{{- define "lakehouse.objectStore.validate" -}}
{{- if .Values.objectStore.minio.enabled -}}
{{- if lt (int .Values.objectStore.minio.replicas) 4 -}}
{{- fail (printf "objectStore.minio.replicas=%v: MinIO's distributed (erasure-coded) mode needs 4 or more" .Values.objectStore.minio.replicas) -}}
{{- end -}}
{{- if not (regexMatch "^[a-zA-Z0-9][a-zA-Z0-9_-]*$" (toString .Values.objectStore.minio.kms.keyName)) -}}
{{- fail "objectStore.minio.kms.keyName: letters, digits, - and _ only" -}}
{{- end -}}
{{- else -}}
{{- $_ := include "lakehouse.objectStore.endpoint" . -}}
{{- $_ := include "lakehouse.objectStore.secret" . -}}
{{- if not (hasPrefix "https://" .Values.objectStore.external.endpoint) -}}
{{- if not .Values.global.insecure -}}
{{- fail (printf "objectStore.external.endpoint=%s is not https://: set global.insecure=true to acknowledge it" .Values.objectStore.external.endpoint) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$" (toString .Values.objectStore.bucket)) -}}
{{- fail (printf "objectStore.bucket=%q is not an S3 bucket name (3-63 lower-case letters, digits, . and -)" (toString .Values.objectStore.bucket)) -}}
{{- end -}}
{{- end -}}
