{{/*
The pod of a Trino node: (dict "root" $ "component" "trino" "role" "coordinator") or
(dict "root" $ "component" "trino-worker" "role" "worker").

- /etc/trino: one projected, read-only volume: the server files (ConfigMap <release>-trino-server,
  config-<role>.properties as config.properties), the catalogs, the access control, password.db
  (a Secret), the release's CA (tls/ca.pem) and pii_decrypt's readers (pii/pii_readers.json).
- /var/run/trino/tls (memory): what an init container in Trino's image makes from the release's
  TLS Secret: keystore.pem (key and certificate, for HTTPS and as OPA's client certificate) and
  truststore.p12 (the JDK's CAs and the release's, for Nessie's REST catalog and S3), and from
  opa.clientTls's Secret opa-client.pem (Trino's client certificate for OPA, CN=trino).
- /usr/lib/trino/plugin/lakehouse-pii: the trino-pii plugin, copied from the platform image
  (trino.pii.pluginPath) by an init container.
- Writable: /data/trino (node.data-dir) and /tmp, emptyDirs; the root file system is read-only.
- pii_decrypt's keys: the keystore on the platform's shared state (read-only), the master key a
  file of the platform's keys Secret.
*/}}
{{- define "lakehouse.trino.pod" -}}
{{- $root := .root -}}
{{- $trino := include "lakehouse.name" (dict "root" $root "component" "trino") -}}
{{- $s3 := include "lakehouse.objectStore.secret" $root | fromYaml -}}
{{- $resources := ternary $root.Values.trino.coordinator.resources $root.Values.trino.worker.resources (eq .role "coordinator") -}}
metadata:
  labels:
    {{- include "lakehouse.labels" (dict "root" $root "component" .component) | nindent 4 }}
  annotations:
    # a changed configuration rolls the nodes
    checksum/config: {{ print (include (print $root.Template.BasePath "/trino-configmap.yaml") $root) (include (print $root.Template.BasePath "/trino-config.yaml") $root) | sha256sum }}
spec:
  serviceAccountName: {{ $trino }}
  automountServiceAccountToken: false
  enableServiceLinks: false
  securityContext:
    {{- include "lakehouse.podSecurityContext" (dict "root" $root) | nindent 4 }}
  {{- if eq .role "worker" }}
  {{- include "lakehouse.spread" (dict "root" $root "component" .component) | nindent 2 }}
  {{- end }}
  {{- with $root.Values.global.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  initContainers:
    - name: pii-plugin
      image: {{ include "lakehouse.image" (dict "root" $root "image" $root.Values.platform.image) }}
      imagePullPolicy: IfNotPresent
      command: ["cp", "-R", "{{ trimSuffix "/" $root.Values.trino.pii.pluginPath }}/.", "/usr/lib/trino/plugin/lakehouse-pii/"]
      securityContext:
        {{- include "lakehouse.containerSecurityContext" $root | nindent 8 }}
      resources:
        requests: {cpu: 50m, memory: 64Mi}
        limits: {cpu: 500m, memory: 128Mi}
      volumeMounts:
        - {name: pii-plugin, mountPath: /usr/lib/trino/plugin/lakehouse-pii}
    - name: tls
      image: {{ include "lakehouse.image" (dict "root" $root "image" $root.Values.trino.image) }}
      imagePullPolicy: IfNotPresent
      # the truststore holds public certificates only: the JDK's cacerts keep their well-known
      # store password, which guards nothing secret
      command:
        - /bin/bash
        - -ceu
        - |
          umask 077
          JAVA_HOME="${JAVA_HOME:-$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")}"
          cat /etc/lakehouse/tls/tls.key /etc/lakehouse/tls/tls.crt > /var/run/trino/tls/keystore.pem
          cat /etc/lakehouse/opa-client/tls.key /etc/lakehouse/opa-client/tls.crt > /var/run/trino/tls/opa-client.pem
          cp "${JAVA_HOME}/lib/security/cacerts" /var/run/trino/tls/truststore.p12
          chmod 0600 /var/run/trino/tls/truststore.p12
          "${JAVA_HOME}/bin/keytool" -importcert -noprompt -alias lakehouse-ca \
            -file /etc/lakehouse/tls/ca.crt -keystore /var/run/trino/tls/truststore.p12 \
            -storetype PKCS12 -storepass changeit >/dev/null
      securityContext:
        {{- include "lakehouse.containerSecurityContext" $root | nindent 8 }}
      resources:
        requests: {cpu: 50m, memory: 128Mi}
        limits: {cpu: 500m, memory: 256Mi}
      volumeMounts:
        - {name: tls-secret, mountPath: /etc/lakehouse/tls, readOnly: true}
        - {name: opa-client, mountPath: /etc/lakehouse/opa-client, readOnly: true}
        - {name: tls, mountPath: /var/run/trino/tls}
        - {name: tmp, mountPath: /tmp}
  containers:
    - name: trino
      image: {{ include "lakehouse.image" (dict "root" $root "image" $root.Values.trino.image) }}
      imagePullPolicy: IfNotPresent
      ports:
        - {name: https, containerPort: 8443, protocol: TCP}
      env:
        - name: TRINO_INTERNAL_SHARED_SECRET
          valueFrom:
            secretKeyRef: {name: {{ $trino }}-internal, key: shared-secret}
        - name: TRINO_S3_ACCESS_KEY
          valueFrom:
            secretKeyRef: {name: {{ $s3.name }}, key: {{ $s3.accessKey }}}
        - name: TRINO_S3_SECRET_KEY
          valueFrom:
            secretKeyRef: {name: {{ $s3.name }}, key: {{ $s3.secretKey }}}
        # read by the trino-pii plugin (services/trino-pii, PiiFunctions and PiiReaders)
        - name: LAKEHOUSE_KEYSTORE_FILE
          value: /var/lib/lakehouse/state/keys/keystore.json
        - name: LAKEHOUSE_MASTER_KEY_FILE
          value: /var/run/secrets/lakehouse/master-key
        - name: LAKEHOUSE_PII_READERS_FILE
          value: /etc/trino/pii/pii_readers.json
      securityContext:
        {{- include "lakehouse.containerSecurityContext" $root | nindent 8 }}
      resources:
        {{- toYaml $resources | nindent 8 }}
      startupProbe:
        httpGet: {path: /v1/info, port: https, scheme: HTTPS}
        periodSeconds: 5
        failureThreshold: 60
      readinessProbe:
        httpGet: {path: /v1/info, port: https, scheme: HTTPS}
        periodSeconds: 10
        failureThreshold: 3
      livenessProbe:
        httpGet: {path: /v1/info, port: https, scheme: HTTPS}
        periodSeconds: 20
        timeoutSeconds: 5
        failureThreshold: 6
      volumeMounts:
        - {name: etc, mountPath: /etc/trino, readOnly: true}
        - {name: tls, mountPath: /var/run/trino/tls, readOnly: true}
        - {name: pii-plugin, mountPath: /usr/lib/trino/plugin/lakehouse-pii, readOnly: true}
        - {name: data, mountPath: /data/trino}
        - {name: tmp, mountPath: /tmp}
        - {name: state, mountPath: /var/lib/lakehouse, readOnly: true}
        - {name: keys, mountPath: /var/run/secrets/lakehouse, readOnly: true}
  volumes:
    - name: etc
      projected:
        defaultMode: 0440
        sources:
          - configMap:
              name: {{ $trino }}-server
              items:
                - {key: {{ printf "config-%s.properties" .role }}, path: config.properties}
                - {key: node.properties, path: node.properties}
                - {key: jvm.config, path: jvm.config}
                - {key: log.properties, path: log.properties}
                - {key: password-authenticator.properties, path: password-authenticator.properties}
          - configMap:
              name: {{ $root.Release.Name }}-trino-catalogs
              items:
                - {key: iceberg.properties, path: catalog/iceberg.properties}
                - {key: iceberg_wap.properties, path: catalog/iceberg_wap.properties}
          - configMap:
              name: {{ $root.Release.Name }}-trino-access-control
              items:
                - {key: access-control.properties, path: access-control.properties}
          - configMap:
              name: {{ $trino }}-pii-readers
              items:
                - {key: pii_readers.json, path: pii/pii_readers.json}
          - secret:
              name: {{ include "lakehouse.trino.authSecret" $root }}
              items:
                - {key: password.db, path: password.db}
          - secret:
              name: {{ include "lakehouse.tlsSecret" $root }}
              items:
                - {key: ca.crt, path: tls/ca.pem}
    - name: tls-secret
      secret:
        secretName: {{ include "lakehouse.tlsSecret" $root }}
        defaultMode: 0440
    - name: opa-client
      secret:
        secretName: {{ include "lakehouse.opa.clientSecret" $root }}
        defaultMode: 0440
    - name: tls
      emptyDir:
        medium: Memory
        sizeLimit: 16Mi
    - name: pii-plugin
      emptyDir:
        sizeLimit: 256Mi
    - name: data
      emptyDir:
        sizeLimit: 10Gi
    - name: tmp
      emptyDir:
        sizeLimit: 10Gi
    - name: state
      persistentVolumeClaim:
        claimName: {{ include "lakehouse.platform.stateClaim" $root }}
        readOnly: true
    - name: keys
      secret:
        secretName: {{ include "lakehouse.platform.keysSecret" $root }}
        defaultMode: 0440
        items:
          - {key: master-key, path: master-key}
{{- end -}}


{{/* The lines of config.properties every Trino node shares */}}
{{- define "lakehouse.trino.commonConfig" -}}
http-server.http.enabled=false
http-server.https.enabled=true
http-server.https.port=8443
http-server.https.keystore.path=/var/run/trino/tls/keystore.pem
http-server.authentication.type=PASSWORD
password-authenticator.config-files=/etc/trino/password-authenticator.properties
internal-communication.shared-secret=${ENV:TRINO_INTERNAL_SHARED_SECRET}
internal-communication.https.required=true
discovery.uri=https://{{ include "lakehouse.name" (dict "root" . "component" "trino") }}:8443
catalog.config-dir=/etc/trino/catalog
{{- end -}}
