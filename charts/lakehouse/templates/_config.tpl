{{/*
lakehouse.renderConfig: a file of files/config/ with each "{{ key }}" placeholder replaced by
its value, as services/lakehouse/local/_config.py renders it for the stack profile. A
placeholder without a value, or a value without a placeholder, fails the render.
Call with (dict "root" $ "file" "nessie/application.properties" "values" .Values.nessie.config).
*/}}
{{- define "lakehouse.renderConfig" -}}
{{- $path := printf "files/config/%s" .file -}}
{{- $text := .root.Files.Get $path -}}
{{- if not $text -}}{{- fail (printf "no configuration template %s" $path) -}}{{- end -}}
{{- range $key, $value := .values -}}
{{- $placeholder := printf "{{ %s }}" $key -}}
{{- if not (contains $placeholder $text) -}}
{{- fail (printf "%s: the value %s has no placeholder in the template" $path $key) -}}
{{- end -}}
{{- if eq (toString $value) "" -}}
{{- fail (printf "%s: %s has no value: set it in the chart's values" $path $key) -}}
{{- end -}}
{{- if or (contains "\n" (toString $value)) (contains "\\" (toString $value)) -}}
{{- fail (printf "%s: the value of %s holds a line break or a backslash" $path $key) -}}
{{- end -}}
{{- $text = replace $placeholder (toString $value) $text -}}
{{- end -}}
{{- if regexMatch "\\{\\{ [a-z][a-z0-9_]* \\}\\}" $text -}}
{{- fail (printf "%s: placeholders without a value: %s" $path (join ", " (regexFindAll "\\{\\{ [a-z][a-z0-9_]* \\}\\}" $text -1))) -}}
{{- end -}}
{{- $text -}}
{{- end -}}
