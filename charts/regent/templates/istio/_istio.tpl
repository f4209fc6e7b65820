{{/* The meshConfig fragment: the ext_authz provider and the proxy stats the dashboard reads. */}}
{{- define "regent.istio.meshConfig" -}}
extensionProviders:
  - name: {{ .Values.istio.providerName }}
    envoyExtAuthzGrpc:
      service: {{ .Values.istio.serviceHost }}
      port: {{ .Values.sidecar.grpcPort }}
      # Istio's default is 600s; a stuck sidecar must not hold requests that long.
      timeout: {{ .Values.istio.timeout }}
      failOpen: {{ .Values.istio.failOpen }}
      statusOnError: {{ .Values.istio.statusOnError | quote }}
      {{- if gt (int .Values.istio.maxRequestBytes) 0 }}
      includeRequestBodyInCheck:
        maxRequestBytes: {{ .Values.istio.maxRequestBytes }}
        allowPartialMessage: true
        packAsBytes: true
      {{- end }}
defaultConfig:
  # Istio proxies hide ext_authz stats unless asked (the dashboard's Envoy panels need them).
  proxyStatsMatcher:
    inclusionRegexps: [".*ext_authz.*"]
{{- end }}
