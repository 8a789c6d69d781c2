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

{{/*
The image of a component's containers (its init containers too): `<component>.image.repository`
and `.tag` where set (an image built for that role, `--build-arg EXTRAS=...`), else `image`.
No image is published yet. Call with (dict "root" $ "component" "collector"|"web"|"enforcer").
*/}}
{{- define "quota-ledger.image" -}}
{{- $own := (index .root.Values .component).image | default dict -}}
{{- $repository := $own.repository | default .root.Values.image.repository -}}
{{- $repository = required "image.repository is required: no quota-ledger image is published yet. Build one from the repository's Dockerfile and push it to a registry your cluster pulls from, e.g. `make image IMAGE=registry.example.org/quota-ledger:0.1.0 && docker push registry.example.org/quota-ledger:0.1.0`, then set image.repository=registry.example.org/quota-ledger and image.tag=0.1.0 (docs/deploy.md)" $repository -}}
{{- printf "%s:%s" $repository ($own.tag | default .root.Values.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{- define "quota-ledger.imagePullPolicy" -}}
{{- $own := (index .root.Values .component).image | default dict -}}
{{- $own.pullPolicy | default .root.Values.image.pullPolicy -}}
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

{{/* The components that log in to the ledger, each with its own role (ledger/store/roles.py). */}}
{{- define "quota-ledger.dbComponents" -}}collector hub web enforcer{{- end -}}

{{/* True ("true") when the chart creates the database URL Secret itself. */}}
{{- define "quota-ledger.ownsDbSecret" -}}
{{- if .Values.postgresql.enabled -}}
{{- if not .Values.postgresql.auth.existingSecret -}}true{{- end -}}
{{- else if and (not .Values.database.existingSecret) .Values.database.url -}}true{{- end -}}
{{- end -}}

{{/* The Secret holding the database URLs. Fails on contradictory values. */}}
{{- define "quota-ledger.dbUrlSecretName" -}}
{{- if .Values.postgresql.enabled -}}
{{- if or .Values.database.url .Values.database.existingSecret -}}
{{- fail "postgresql.enabled=true uses the bundled database: leave database.url and database.existingSecret empty (postgresql.auth.existingSecret holds its credentials), or set postgresql.enabled=false for an external database" -}}
{{- end -}}
{{- default (include "quota-ledger.dbSecretName" .) .Values.postgresql.auth.existingSecret -}}
{{- else if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else if .Values.database.url -}}
{{- include "quota-ledger.dbSecretName" . -}}
{{- else -}}
{{- fail "no database: set postgresql.enabled=true (bundled), or database.existingSecret (recommended) or database.url for an external PostgreSQL" -}}
{{- end -}}
{{- end -}}

{{/*
Key of the database URL a component connects with. Call with (dict "root" $ "component" c);
component "owner" is the migrating role. With database.roles.enabled each component has its
own login role: key "<component>-url" (database.existingSecretRoleKeys for an external
existingSecret).
*/}}
{{- define "quota-ledger.dbUrlSecretKey" -}}
{{- $v := .root.Values -}}
{{- $external := and (not $v.postgresql.enabled) $v.database.existingSecret -}}
{{- if or (eq .component "owner") (not $v.database.roles.enabled) -}}
{{- if $external }}{{ $v.database.existingSecretKey }}{{ else }}url{{ end -}}
{{- else if $external -}}
{{- required (printf "database.existingSecretRoleKeys.%s is required with database.roles.enabled (or set database.roles.enabled=false)" .component) (index $v.database.existingSecretRoleKeys .component) -}}
{{- else -}}
{{- printf "%s-url" .component -}}
{{- end -}}
{{- end -}}

{{/* Login role name of a component in the chart-generated URLs. Call with (dict "root" $ "component" c). */}}
{{- define "quota-ledger.dbLoginRole" -}}
{{- printf "%s_%s_login" (include "quota-ledger.fullname" .root | replace "-" "_") .component -}}
{{- end -}}

{{/*
A generated secret value that never rotates: the value given in values, else the one stored in
the live Secret (lookup), else a new random one -- but only when lookup can see the cluster.
`helm template`, client-side dry runs and GitOps tools that render offline (Argo CD) cannot
look anything up: rendering fails instead of silently rolling a new password on every sync.
Call with (dict "root" $ "secret" name "key" k "given" value "length" n "hint" "what to set").
https://helm.sh/docs/chart_template_guide/functions_and_pipelines/#using-the-lookup-function
*/}}
{{- define "quota-ledger.persistentSecretValue" -}}
{{- if .given -}}
{{- .given -}}
{{- else -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- if and $existing $existing.data (hasKey $existing.data .key) -}}
{{- index $existing.data .key | b64dec -}}
{{- else if lookup "v1" "Secret" .root.Release.Namespace "" -}}
{{- randAlphaNum .length -}}
{{- else -}}
{{- fail (printf "cannot generate %s/%s: this render cannot look up the cluster (helm template, --dry-run, Argo CD), so a generated value would change on every render. Set %s" .secret .key .hint) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every container that talks to the ledger. Call with (dict "root" $ "component" c). */}}
{{- define "quota-ledger.commonEnv" -}}
- name: QUOTA_LEDGER_DB_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "quota-ledger.dbUrlSecretName" .root }}
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

{{/*
The collector settings file, as mounted at /etc/quota-ledger/collector.yaml. No namespaces
listed means the release namespace (a Role there), unless collector.rbac.clusterWide asks for
every namespace (a ClusterRole).
*/}}
{{- define "quota-ledger.collectorNamespaces" -}}
{{- if .Values.collector.settings.namespaces -}}
{{- toJson .Values.collector.settings.namespaces -}}
{{- else if .Values.collector.rbac.clusterWide -}}
[]
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "quota-ledger.collectorSettings" -}}
{{- $settings := deepCopy .Values.collector.settings -}}
{{- $_ := set $settings "namespaces" (include "quota-ledger.collectorNamespaces" . | fromJsonArray) -}}
{{- toYaml $settings -}}
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
Init containers of every ledger client (collector, enforcer, web), in order:
1. policy-check: `quota-ledger policy check` over the rendered policy, so a typo in
   values fails the rollout (the pod never becomes Ready, `helm upgrade --wait` fails, the old
   pods keep running) instead of the hub's next restart.
2. migrate: `quota-ledger migrate --wait`, idempotent and serialised across pods by a
   PostgreSQL advisory lock; it waits for a database that is still starting. Run here rather
   than in a Helm hook so that `helm install --wait`, --atomic, Flux and Argo CD never wait on
   a hook that waits on them. It also creates each component's login role (the URLs below).
Call with (dict "root" $ "component" c).
*/}}
{{- define "quota-ledger.initContainers" -}}
{{- $root := .root }}
- name: policy-check
  image: {{ include "quota-ledger.image" . }}
  imagePullPolicy: {{ include "quota-ledger.imagePullPolicy" . }}
  args: ["policy", "check", "/etc/quota-ledger/policy.yaml"]
  securityContext:
    {{- include "quota-ledger.containerSecurityContext" $root | nindent 4 }}
  resources:
    requests:
      cpu: 10m
      memory: 64Mi
    limits:
      memory: 128Mi
  volumeMounts:
    {{- include "quota-ledger.configVolumeMounts" $root | nindent 4 }}
{{- if $root.Values.migrations.enabled }}
- name: migrate
  image: {{ include "quota-ledger.image" . }}
  imagePullPolicy: {{ include "quota-ledger.imagePullPolicy" . }}
  args: ["migrate", "--wait", {{ $root.Values.migrations.waitSeconds | quote }}{{ if not $root.Values.database.roles.enabled }}, "--no-roles"{{ end }}]
  env:
    {{- include "quota-ledger.commonEnv" (dict "root" $root "component" "owner") | nindent 4 }}
    {{- if $root.Values.database.roles.enabled }}
    {{- range $c := splitList " " (include "quota-ledger.dbComponents" $root) }}
    - name: QUOTA_LEDGER_{{ upper $c }}_DB_URL
      valueFrom:
        secretKeyRef:
          name: {{ include "quota-ledger.dbUrlSecretName" $root }}
          key: {{ include "quota-ledger.dbUrlSecretKey" (dict "root" $root "component" $c) }}
    {{- end }}
    {{- end }}
  securityContext:
    {{- include "quota-ledger.containerSecurityContext" $root | nindent 4 }}
  resources:
    {{- toYaml $root.Values.migrations.resources | nindent 4 }}
  volumeMounts:
    {{- include "quota-ledger.configVolumeMounts" $root | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Namespace of the JupyterHub release. */}}
{{- define "quota-ledger.hubNamespace" -}}
{{- default .Release.Namespace .Values.hub.namespace -}}
{{- end -}}
