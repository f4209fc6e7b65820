{{/*
Names. Kubernetes names are limited to 63 characters; component names keep the suffix intact by
truncating the base instead.
*/}}
{{- define "regent.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regent.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>" within 63 characters. Call with (dict "ctx" . "suffix" "x"). */}}
{{- define "regent.componentName" -}}
{{- $suffix := .suffix }}
{{- $base := include "regent.fullname" .ctx | trunc (int (sub 62 (len $suffix))) | trimSuffix "-" }}
{{- printf "%s-%s" $base $suffix }}
{{- end }}

{{- define "regent.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regent.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regent.labels" -}}
helm.sh/chart: {{ include "regent.chart" . }}
{{ include "regent.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: regent
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "regent.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regent.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per-component names and labels. */}}
{{- define "regent.server.fullname" -}}
{{- include "regent.componentName" (dict "ctx" . "suffix" "server") }}
{{- end }}

{{- define "regent.server.selectorLabels" -}}
{{ include "regent.selectorLabels" . }}
app.kubernetes.io/component: bundle-server
{{- end }}

{{- define "regent.server.labels" -}}
{{ include "regent.labels" . }}
app.kubernetes.io/component: bundle-server
{{- end }}

{{- define "regent.injector.fullname" -}}
{{- include "regent.componentName" (dict "ctx" . "suffix" "injector") }}
{{- end }}

{{- define "regent.injector.selectorLabels" -}}
{{ include "regent.selectorLabels" . }}
app.kubernetes.io/component: sidecar-injector
{{- end }}

{{- define "regent.injector.labels" -}}
{{ include "regent.labels" . }}
app.kubernetes.io/component: sidecar-injector
{{- end }}

{{- define "regent.server.serviceAccountName" -}}
{{- if .Values.server.serviceAccount.create }}
{{- default (include "regent.server.fullname" .) .Values.server.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.server.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image reference: the tag defaults to the chart's appVersion; a digest wins over the tag. */}}
{{- define "regent.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) }}
{{- end }}
{{- end }}

{{/* In-cluster URL of the bundle server (the sidecars' default bundle source). */}}
{{- define "regent.server.url" -}}
{{- printf "%s://%s.%s.svc:%v" (include "regent.server.scheme" . | lower) (include "regent.server.fullname" .) (include "regent.namespace" .) .Values.server.service.port }}
{{- end }}

{{/* HTTPS when the server config has a `tls` section (its files come via extraVolumes). */}}
{{- define "regent.server.scheme" -}}
{{- if (default dict .Values.server.config).tls }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/*
The signing key secret is required and never taken from values: fail early with the fix.
*/}}
{{- define "regent.server.signingSecret" -}}
{{- if not .Values.server.signing.existingSecret }}
{{- fail "server.signing.existingSecret is required: create the bundle signing key Secret first, e.g.\n  openssl genpkey -algorithm ed25519 -out private.pem && kubectl create secret generic regent-signing --from-file=private.pem\nthen set --set server.signing.existingSecret=regent-signing (the private key is never put in values)." }}
{{- end }}
{{- .Values.server.signing.existingSecret }}
{{- end }}

{{/*
The bundle server's config file. `server.config` is passed through unchanged, so keys the chart does
not know about still reach the binary (which rejects unknown ones by name); the keys the chart's
mounts and ports depend on (listen, data_dir, signing, webhook.secret_file) are set here and win.
*/}}
{{- define "regent.server.config" -}}
{{- if not (dig "git" "repo" "" (default dict .Values.server.config)) }}
{{- fail "server.config.git.repo is required: the URL of the policy git repository the bundle server watches" }}
{{- end }}
{{- $cfg := deepCopy (default dict .Values.server.config) }}
{{- $_ := set $cfg "listen" (printf "0.0.0.0:%v" .Values.server.port) }}
{{- $_ := set $cfg "data_dir" "/var/lib/regent/data" }}
{{- /* The key from the Secret signs; keys listed in server.config.signing.keys (e.g. the previous
     key during a rotation, mounted with extraVolumes) are kept after it. */}}
{{- $signing := deepCopy (default dict (get $cfg "signing")) }}
{{- $keys := list (dict "kid" .Values.server.signing.kid "private_key_file" (printf "/etc/regent/signing/%s" .Values.server.signing.secretKey)) }}
{{- range (default list (get $signing "keys")) }}
{{- if ne .kid $.Values.server.signing.kid }}
{{- $keys = append $keys . }}
{{- end }}
{{- end }}
{{- $_ := set $signing "keys" $keys }}
{{- $_ := set $signing "active_kid" .Values.server.signing.kid }}
{{- $_ := set $cfg "signing" $signing }}
{{- if .Values.server.gitWebhook.existingSecret }}
{{- $hook := deepCopy (default dict (get $cfg "webhook")) }}
{{- $_ := set $hook "secret_file" (printf "/etc/regent/git-webhook/%s" .Values.server.gitWebhook.secretKey) }}
{{- $_ := set $cfg "webhook" $hook }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/*
The regent-sidecar's config file (sidecar.yaml). `sidecar.config` is passed through; the listeners
the probes and Envoy depend on, the keyring mount and the persist dir are set here. Without explicit
`sync.bundles`, every name in `sidecar.bundles` is fetched from this release's bundle server.
*/}}
{{- define "regent.sidecar.config" -}}
{{- $cfg := deepCopy (default dict .Values.sidecar.config) }}
{{- $grpc := deepCopy (default dict (get $cfg "grpc")) }}
{{- $_ := set $grpc "addr" (printf "127.0.0.1:%v" .Values.sidecar.grpcPort) }}
{{- $_ := set $cfg "grpc" $grpc }}
{{- $http := deepCopy (default dict (get $cfg "http")) }}
{{- $_ := set $http "addr" (printf "0.0.0.0:%v" .Values.sidecar.httpPort) }}
{{- $_ := set $cfg "http" $http }}
{{- $sync := deepCopy (default dict (get $cfg "sync")) }}
{{- if not (hasKey $sync "bundles") }}
{{- $bundles := list }}
{{- range .Values.sidecar.bundles }}
{{- $b := dict "name" .name "url" (printf "%s/bundles/%s" (include "regent.server.url" $) .name) }}
{{- with .roots }}{{ $_ := set $b "roots" . }}{{ end }}
{{- $bundles = append $bundles $b }}
{{- end }}
{{- $_ := set $sync "bundles" $bundles }}
{{- end }}
{{- if and .Values.sidecar.publicKeys (not (hasKey $sync "keys")) }}
{{- $keys := list }}
{{- range $kid, $_ := .Values.sidecar.publicKeys }}
{{- $keys = append $keys (dict "kid" $kid "public_key_file" (printf "/etc/regent-sidecar/keys/%s.pem" $kid)) }}
{{- end }}
{{- $_ := set $sync "keys" $keys }}
{{- end }}
{{- $_ := set $sync "persist_dir" "/var/lib/regent-sidecar" }}
{{- if and .Values.sidecar.statusReport (not (hasKey $sync "status")) }}
{{- $_ := set $sync "status" (dict "url" (printf "%s/v1/status/report" (include "regent.server.url" .))) }}
{{- end }}
{{- $_ := set $cfg "sync" $sync }}
{{- toYaml $cfg }}
{{- end }}

{{/*
regent-sidecar as a container, for pods that run Envoy (or an Istio proxy). Used by the injector's
template and usable from a parent chart, with the subchart's values as context:
  include "regent.sidecarContainer" (dict "Values" .Values.regent "Chart" .Chart) | nindent 8
The pod also needs the volumes from "regent.sidecarVolumes" and the ConfigMap named by
sidecar.configMapName in its namespace.
*/}}
{{- define "regent.sidecarContainer" -}}
- name: {{ .Values.sidecar.containerName }}
  image: {{ include "regent.image" (dict "image" .Values.sidecar.image "chart" .Chart) | quote }}
  imagePullPolicy: {{ .Values.sidecar.image.pullPolicy }}
  args: ["--config", "/etc/regent-sidecar/sidecar.yaml"]
  ports:
    - name: regent-grpc
      containerPort: {{ .Values.sidecar.grpcPort }}
      protocol: TCP
    - name: regent-http
      containerPort: {{ .Values.sidecar.httpPort }}
      protocol: TCP
  {{- with .Values.sidecar.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  readinessProbe:
    httpGet: {path: /ready, port: {{ .Values.sidecar.httpPort }}}
    periodSeconds: 5
    failureThreshold: 2
  livenessProbe:
    httpGet: {path: /health, port: {{ .Values.sidecar.httpPort }}}
    periodSeconds: 10
    failureThreshold: 3
  {{- with .Values.sidecar.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.sidecar.securityContext | nindent 4 }}
  volumeMounts:
    - name: regent-sidecar-config
      mountPath: /etc/regent-sidecar
      readOnly: true
    - name: regent-sidecar-data
      mountPath: /var/lib/regent-sidecar
    {{- with .Values.sidecar.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{/* The volumes "regent.sidecarContainer" mounts. */}}
{{- define "regent.sidecarVolumes" -}}
- name: regent-sidecar-config
  configMap:
    name: {{ .Values.sidecar.configMapName }}
    items:
      - {key: sidecar.yaml, path: sidecar.yaml}
      {{- range $kid, $_ := .Values.sidecar.publicKeys }}
      - {key: {{ printf "key-%s.pem" $kid | quote }}, path: {{ printf "keys/%s.pem" $kid | quote }}}
      {{- end }}
- name: regent-sidecar-data
  emptyDir:
    sizeLimit: {{ .Values.sidecar.persistSizeLimit }}
{{- with .Values.sidecar.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The injector's TLS comes from cert-manager or from a provided Secret plus its CA. */}}
{{- define "regent.injector.validate" -}}
{{- if and .Values.injector.nativeSidecar (semverCompare "<1.29.0-0" .Capabilities.KubeVersion.Version) }}
{{- fail (printf "injector.nativeSidecar needs Kubernetes >= 1.29 (sidecar containers); this cluster is %s" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and (not .Values.injector.tls.certManager.enabled) (not .Values.injector.tls.existingSecret) }}
{{- fail "injector: the webhook needs TLS: set injector.tls.certManager.enabled=true, or injector.tls.existingSecret (a kubernetes.io/tls Secret) with injector.tls.caBundle" }}
{{- end }}
{{- if and (not .Values.injector.tls.certManager.enabled) (not .Values.injector.tls.caBundle) }}
{{- fail "injector.tls.caBundle is required with injector.tls.existingSecret (base64 PEM of the CA that signed the serving certificate)" }}
{{- end }}
{{- end }}
