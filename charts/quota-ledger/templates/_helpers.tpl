{{/* vim: set filetype=mustache: */}}

{{/* Chart name, possibly overridden. */}}
{{- define "quota-ledger.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fully qualified prefix of every resource name. Truncated so that the longest
suffix we append ("-postgresql-headless", 20 chars) still fits in 63.
*/}}
{{- define "quota-ledger.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 42 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "quota-ledger.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels used in selectors: stable across upgrades. Call with (dict "root" $ "component" "x"). */}}
{{- define "quota-ledger.selectorLabels" -}}
app.kubernetes.io/name: {{ include "quota-ledger.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Labels of all pods of this release regardless of component (NetworkPolicy peers). */}}
{{- define "quota-ledger.instanceLabels" -}}
app.kubernetes.io/name: {{ include "quota-ledger.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Standard labels. Call with (dict "root" $ "component" "x"). */}}
{{- define "quota-ledger.labels" -}}
{{ include "quota-ledger.selectorLabels" . }}
helm.sh/chart: {{ include "quota-ledger.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: quota-ledger
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "quota-ledger.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "quota-ledger.collector.serviceAccountName" -}}
{{- if .Values.collector.serviceAccount.create -}}
{{- default (printf "%s-collector" (include "quota-ledger.fullname" .)) .Values.collector.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.collector.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "quota-ledger.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "quota-ledger.fullname" .) -}}
{{- end -}}

{{- define "quota-ledger.configMapName" -}}
{{- printf "%s-config" (include "quota-ledger.fullname" .) -}}
{{- end -}}

{{/* Name of the Secret the chart creates for the database (bundled or database.url). */}}
{{- define "quota-ledger.dbSecretName" -}}
{{- printf "%s-db" (include "quota-ledger.fullname" .) -}}
{{- end -}}

{{/* True ("true") when the chart creates the database URL Secret itself. */}}
{{- define "quota-ledger.ownsDbSecret" -}}
{{- if or .Values.postgresql.enabled (and (not .Values.database.existingSecret) .Values.database.url) -}}true{{- end -}}
{{- end -}}

{{/* The Secret and key holding QUOTA_LEDGER_DB_URL. Fails on contradictory values. */}}
{{- define "quota-ledger.dbUrlSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}
{{- fail "postgresql.enabled=true uses the bundled database: leave database.url and database.existingSecret empty, or set postgresql.enabled=false for an external database" -}}
{{- end -}}
{{- include "quota-ledger.dbSecretName" . -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- include "quota-ledger.dbSecretName" . -}}
{{- else -}}
{{- fail "no database: set postgresql.enabled=true (bundled), or database.existingSecret (recommended) or database.url for an external PostgreSQL" -}}
{{- end -}}
{{- end -}}

{{- define "quota-ledger.dbUrlSecretKey" -}}
{{- if and (not .Values.postgresql.enabled) .Values.database.existingSecret -}}
{{- .Values.database.existingSecretKey -}}
{{- else -}}
url
{{- end -}}
{{- end -}}

{{/* Environment shared by every container that talks to the ledger. */}}
{{- define "quota-ledger.commonEnv" -}}
- name: QUOTA_LEDGER_DB_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "quota-ledger.dbUrlSecretName" . }}
      key: {{ include "quota-ledger.dbUrlSecretKey" . }}
- name: QUOTA_LEDGER_CONFIG
  value: /etc/quota-ledger/policy.yaml
- name: PYTHONUNBUFFERED
  value: "1"
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- end -}}

{{/* Checksum of the database Secret content (rolls pods when the URL changes). */}}
{{- define "quota-ledger.dbChecksum" -}}
{{- if include "quota-ledger.ownsDbSecret" . -}}
{{- include (print .Template.BasePath "/secret-db.yaml") . | sha256sum -}}
{{- else -}}
{{- printf "existing:%s/%s" .Values.database.existingSecret .Values.database.existingSecretKey | sha256sum -}}
{{- end -}}
{{- end -}}

{{/* The collector settings file, as mounted at /etc/quota-ledger/collector.yaml. */}}
{{- define "quota-ledger.collectorSettings" -}}
{{- toYaml .Values.collector.settings -}}
{{- end -}}

{{/* Volumes for the config mount and a writable /tmp. Call with (dict "root" $ "items" (list "policy.yaml")). */}}
{{- define "quota-ledger.configVolumes" -}}
- name: config
  configMap:
    name: {{ include "quota-ledger.configMapName" .root }}
    items:
      {{- range .items }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- end -}}

{{/*
Mounted as a directory (no subPath) so ConfigMap updates reach the running pod
and the policy is hot-reloaded.
*/}}
{{- define "quota-ledger.configVolumeMounts" -}}
- name: config
  mountPath: /etc/quota-ledger
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "quota-ledger.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "quota-ledger.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{- define "quota-ledger.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/*
initContainer that waits until the bundled PostgreSQL accepts TCP connections,
using the application image's Python (no extra image to pull).
*/}}
{{- define "quota-ledger.waitForDb" -}}
{{- if .Values.postgresql.enabled }}
- name: wait-for-db
  image: {{ include "quota-ledger.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  command:
    - python
    - -c
    - |
      import socket, sys, time
      host, port = sys.argv[1], int(sys.argv[2])
      for attempt in range(600):
          try:
              socket.create_connection((host, port), timeout=2).close()
              print(f"database {host}:{port} is accepting connections")
              break
          except OSError as exc:
              print(f"waiting for database {host}:{port}: {exc}", flush=True)
              time.sleep(2)
      else:
          sys.exit(f"database {host}:{port} did not come up")
    - {{ include "quota-ledger.postgresql.fullname" . }}
    - "5432"
  securityContext:
    {{- include "quota-ledger.containerSecurityContext" . | nindent 4 }}
  resources:
    requests:
      cpu: 10m
      memory: 32Mi
    limits:
      memory: 64Mi
{{- end }}
{{- end -}}

{{/* Namespace of the JupyterHub release. */}}
{{- define "quota-ledger.hubNamespace" -}}
{{- default .Release.Namespace .Values.hub.namespace -}}
{{- end -}}
