{{/*
proxy.toml and control.toml, rendered from .Values.proxy.config / .Values.control.config plus
the keys the chart owns (listen addresses, spill dir, control URL, store kind).
*/}}

{{- define "iron.proxy.toml" -}}
{{- $cfg := .Values.proxy.config -}}
{{- $server := merge (dict "listen" "0.0.0.0:8080" "admin_listen" "0.0.0.0:9090") (deepCopy $cfg.server) -}}
{{- $budget := merge (dict "spill_dir" "/var/lib/iron-proxy") (deepCopy $cfg.budget) -}}
{{- $control := dict "url" (include "iron.controlUrl" .) "proxy_secret_env" "IRON_PROXY_SECRET" -}}
# iron-proxy configuration (docs/configuration.md), rendered by the Helm chart from
# .Values.proxy.config. IRON_PROXY_SECRET, IRON_BUDGET__PROXY_ID (the pod name) and
# IRON_SERVER__THREADS come from the pod's environment.
{{ include "iron.toml.section" (list "server" $server) }}

{{ include "iron.toml.section" (list "upstream" $cfg.upstream) }}

{{ include "iron.toml.section" (list "security" $cfg.security) }}

{{ include "iron.toml.section" (list "budget" $budget) }}

{{ include "iron.toml.section" (list "features" $cfg.features) }}

{{ include "iron.toml.section" (list "control" $control) }}
{{- end }}

{{- define "iron.control.toml" -}}
{{- $cfg := .Values.control.config -}}
{{- $server := merge (dict "listen" "0.0.0.0:7070") (deepCopy $cfg.server) -}}
# iron-control configuration (control/README.md), rendered by the Helm chart from
# .Values.control.config. The secrets (IRON_MASTER_KEY, IRON_MASTER_KEY_PREVIOUS,
# IRON_PROXY_SECRET, IRON_BOOTSTRAP_ADMIN_KEY) and the Redis URL (IRON_STORE__URL) come from
# Secrets through the pod's environment.
{{ include "iron.toml.section" (list "server" $server) }}

[store]
kind = "redis"

{{ include "iron.toml.section" (list "security" $cfg.security) }}

{{ include "iron.toml.section" (list "events" $cfg.events) }}

{{ include "iron.toml.section" (list "leases" $cfg.leases) }}

{{- /* The Control Panel build that the image ships (Dockerfile: /usr/share/iron/dashboard). */}}
{{- $dashboard := merge (deepCopy ($cfg.dashboard | default dict)) (dict "dir" "/usr/share/iron/dashboard") }}

{{ include "iron.toml.section" (list "dashboard" $dashboard) }}
{{- end }}
