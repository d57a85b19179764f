{{/*
A CronJob of the platform image: (dict "root" $ "component" "dbt" "values" .Values.platform.dbt
"args" (list "build") "uses" (list "trino")). One run at a time (concurrencyPolicy Forbid), bounded in time
(activeDeadlineSeconds) and in retries (backoffLimit); finished Jobs are cleaned up.
*/}}
{{- define "lakehouse.platform.cronJob" -}}
{{- $root := .root -}}
{{- $v := .values -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "lakehouse.name" (dict "root" $root "component" .component) }}
  labels:
    {{- include "lakehouse.labels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    checkov.io/skip1: "CKV_K8S_15=images are pinned by version and, in production, by digest (lakehouse.image): IfNotPresent runs the same bytes and starts pods while the registry is unreachable"
    {{- include "lakehouse.checkovDigestSkip" (dict "images" (list $root.Values.platform.image) "n" 9) | nindent 4 }}
spec:
  schedule: {{ $v.schedule | quote }}
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulJobsHistoryLimit: 3
  failedJobsHistoryLimit: 3
  jobTemplate:
    metadata:
      labels:
        {{- include "lakehouse.labels" (dict "root" $root "component" .component) | nindent 8 }}
    spec:
      backoffLimit: {{ $v.backoffLimit }}
      activeDeadlineSeconds: {{ $v.activeDeadlineSeconds }}
      ttlSecondsAfterFinished: 86400
      template:
        metadata:
          labels:
            {{- include "lakehouse.labels" (dict "root" $root "component" .component) | nindent 12 }}
        spec:
          {{- include "lakehouse.platform.podSpec" (dict "root" $root "component" .component) | nindent 10 }}
          restartPolicy: Never
          containers:
            {{- include "lakehouse.platform.container" (dict "root" $root "name" .component "uses" .uses "args" .args "resources" $v.resources) | nindent 12 }}
          volumes:
            {{- include "lakehouse.platform.volumes" (dict "root" $root "uses" .uses) | nindent 12 }}
{{- end -}}
