{{/*
Names, labels, images, and the TOML renderer used by the ConfigMaps.
*/}}

{{- define "iron.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-iron, or the release name when it already contains the chart name. */}}
{{- define "iron.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a component's objects: (list $ "proxy") -> <fullname>-proxy */}}
{{- define "iron.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "iron.fullname" $root) (index . 1) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "iron.namespace" -}}
{{- .Release.Namespace }}
{{- end }}

{{- define "iron.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "iron.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iron.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "iron.labels" -}}
helm.sh/chart: {{ include "iron.chart" . }}
{{ include "iron.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: iron
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* (list $ "proxy") */}}
{{- define "iron.componentSelectorLabels" -}}
{{ include "iron.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "iron.componentLabels" -}}
{{ include "iron.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "iron.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "iron.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* image reference from an image block: (dict "image" .Values.image "default" .Chart.AppVersion) */}}
{{- define "iron.imageRef" -}}
{{- $img := .image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .default $img.tag) }}
{{- end }}
{{- end }}

{{- define "iron.image" -}}
{{- include "iron.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) }}
{{- end }}

{{/* Secrets ---------------------------------------------------------------------------- */}}

{{/* The Secret holding master key, proxy secret and bootstrap admin key. */}}
{{- define "iron.secretName" -}}
{{- default (include "iron.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* Redis mode: "bundled" or "external"; fails on a contradictory or empty choice. */}}
{{- define "iron.redisMode" -}}
{{- $r := .Values.redis }}
{{- $external := or $r.url $r.existingSecret }}
{{- if and $r.bundled.enabled $external }}
{{- fail "redis: redis.url / redis.existingSecret (external Redis) and redis.bundled.enabled are exclusive; set redis.bundled.enabled=false to use an external Redis" }}
{{- else if and $r.url $r.existingSecret }}
{{- fail "redis: set redis.url or redis.existingSecret, not both" }}
{{- else if $r.bundled.enabled }}
{{- "bundled" }}
{{- else if $external }}
{{- "external" }}
{{- else }}
{{- fail "redis: control needs Redis; set redis.url (or redis.existingSecret) for an external Redis, or redis.bundled.enabled=true for a trial" }}
{{- end }}
{{- end }}

{{/* Secret and key holding the Redis URL. */}}
{{- define "iron.redisUrlSecretName" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecret }}
{{- else }}
{{- include "iron.componentName" (list . "redis") }}
{{- end }}
{{- end }}

{{- define "iron.redisUrlSecretKey" -}}
{{- if .Values.redis.existingSecret }}
{{- .Values.redis.existingSecretKey }}
{{- else }}
{{- "redis-url" }}
{{- end }}
{{- end }}

{{/* Proxy ------------------------------------------------------------------------------ */}}

{{/* terminationGracePeriodSeconds of the proxy: longer than shutdown_grace_secs (+ preStop). */}}
{{- define "iron.proxy.terminationGrace" -}}
{{- $grace := int .Values.proxy.config.server.shutdown_grace_secs }}
{{- $pre := int .Values.proxy.preStopSleepSeconds }}
{{- $t := .Values.proxy.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $t }}
{{- add $grace $pre 15 }}
{{- else if le (int $t) (add $grace $pre) }}
{{- fail (printf "proxy.terminationGracePeriodSeconds (%d) must be greater than proxy.config.server.shutdown_grace_secs (%d) + proxy.preStopSleepSeconds (%d), or Kubernetes kills streams that are still finishing" (int $t) $grace $pre) }}
{{- else }}
{{- int $t }}
{{- end }}
{{- end }}

{{- define "iron.controlUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "iron.componentName" (list . "control")) (include "iron.namespace" .) (int .Values.control.service.port) }}
{{- end }}

{{/* Pod anti-affinity: (list $ "proxy" .Values.proxy) */}}
{{- define "iron.affinity" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $v := index . 2 }}
{{- if $v.affinity }}
{{- toYaml $v.affinity }}
{{- else if eq $v.podAntiAffinity "hard" }}
podAntiAffinity:
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "iron.componentSelectorLabels" (list $root $component) | nindent 10 }}
{{- else if eq $v.podAntiAffinity "soft" }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "iron.componentSelectorLabels" (list $root $component) | nindent 12 }}
{{- end }}
{{- end }}

{{/* Probe timings from values plus a fixed handler: (dict "timings" .Values.proxy.livenessProbe "path" "/healthz" "port" "admin") */}}
{{- define "iron.probe" -}}
httpGet:
  path: {{ .path }}
  port: {{ .port }}
{{- range $k, $v := .timings }}
{{ $k }}: {{ int $v }}
{{- end }}
{{- end }}

{{/* TOML ------------------------------------------------------------------------------- */}}

{{/*
One TOML value. Helm reads YAML numbers as float64; integral numbers are written as TOML
integers (Iron's u64 keys reject 30.0). Strings use JSON escapes, which TOML basic strings
accept.
*/}}
{{- define "iron.toml.value" -}}
{{- if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (include "iron.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "map" . }}
{{- $items := list }}
{{- range $k, $v := . }}
{{- if not (kindIs "invalid" $v) }}
{{- $items = append $items (printf "%s = %s" (include "iron.toml.key" $k) (include "iron.toml.value" $v)) }}
{{- end }}
{{- end }}
{{- printf "{ %s }" (join ", " $items) }}
{{- else if or (kindIs "float64" .) (kindIs "float32" .) }}
{{- if eq (float64 .) (floor .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- else if kindIs "invalid" . }}
{{- fail "TOML has no null value" }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{- define "iron.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}
{{- . }}
{{- else }}
{{- toJson . }}
{{- end }}
{{- end }}

{{/* A [section] from a map; null values are left out: (list "server" $map) */}}
{{- define "iron.toml.section" -}}
[{{ index . 0 }}]
{{- range $k, $v := index . 1 }}
{{- if not (kindIs "invalid" $v) }}
{{ include "iron.toml.key" $k }} = {{ include "iron.toml.value" $v }}
{{- end }}
{{- end }}
{{- end }}
