{{/* Egress rule: DNS. */}}
{{- define "quota-ledger.netpol.dnsEgress" -}}
{{- if .Values.networkPolicy.allowDns }}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
{{- end }}
{{- end -}}

{{/* Egress rule: the ledger database (bundled pod or external peers). */}}
{{- define "quota-ledger.netpol.dbEgress" -}}
{{- if .Values.postgresql.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "quota-ledger.selectorLabels" (dict "root" . "component" "postgresql") | nindent 10 }}
  ports:
    - protocol: TCP
      port: 5432
{{- else }}
- to:
    {{- toYaml .Values.networkPolicy.externalDatabasePeers | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .Values.database.port }}
{{- end }}
{{- end -}}

{{/* A peer selecting pods with `labels` in the hub's namespace. Call with (dict "root" $ "labels" map). */}}
{{- define "quota-ledger.netpol.hubPeer" -}}
- podSelector:
    matchLabels:
      {{- toYaml .labels | nindent 6 }}
  {{- if ne (include "quota-ledger.hubNamespace" .root) .root.Release.Namespace }}
  namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ include "quota-ledger.hubNamespace" .root }}
  {{- end }}
{{- end -}}

{{/* Egress rule: the hub's REST API. */}}
{{- define "quota-ledger.netpol.hubEgress" -}}
- to:
    {{- include "quota-ledger.netpol.hubPeer" (dict "root" . "labels" .Values.hub.podLabels) | trim | nindent 4 }}
  ports:
    - protocol: TCP
      port: {{ .Values.hub.apiPort }}
{{- end -}}
