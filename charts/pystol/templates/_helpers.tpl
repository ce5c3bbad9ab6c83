{{- define "pystol.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pystol.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "pystol.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pystol.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pystol.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pystol.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pystol
{{- end -}}

{{/* labels of one component: (dict "ctx" $ "component" "api") */}}
{{- define "pystol.componentLabels" -}}
{{ include "pystol.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pystol.componentSelector" -}}
{{ include "pystol.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pystol.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end -}}

{{- define "pystol.serviceAccountName" -}}
{{- if .ctx.Values.serviceAccount.create -}}
{{ include "pystol.fullname" .ctx }}-{{ .component }}
{{- else -}}
default
{{- end -}}
{{- end -}}

{{- define "pystol.tokensSecret" -}}
{{- if .Values.apiTokens.existingSecret -}}
{{ .Values.apiTokens.existingSecret }}
{{- else -}}
{{ include "pystol.fullname" . }}-api-tokens
{{- end -}}
{{- end -}}

{{- define "pystol.signingKeySecret" -}}
{{- if .Values.signingKey.existingSecret -}}
{{ .Values.signingKey.existingSecret }}
{{- else -}}
{{ include "pystol.fullname" . }}-signing-key
{{- end -}}
{{- end -}}

{{- define "pystol.tokensKey" -}}
{{- if .Values.apiTokens.existingSecret -}}
{{ .Values.apiTokens.existingSecretKey }}
{{- else -}}
tokens
{{- end -}}
{{- end -}}

{{- define "pystol.redisSecret" -}}
{{- if .Values.redis.existingSecret -}}
{{ .Values.redis.existingSecret }}
{{- else -}}
{{ include "pystol.fullname" . }}-redis
{{- end -}}
{{- end -}}

{{- define "pystol.redisSecretKey" -}}
{{- if .Values.redis.existingSecret -}}
{{ .Values.redis.existingSecretPasswordKey }}
{{- else -}}
redis-password
{{- end -}}
{{- end -}}

{{/* Where an external Redis's CA certificate is mounted (externalRedis.tlsCaSecret). */}}
{{- define "pystol.redisCaDir" -}}
/etc/pystol/redis-ca
{{- end -}}

{{- define "pystol.redisCaMounted" -}}
{{- if and (not .Values.redis.enabled) .Values.externalRedis.tls .Values.externalRedis.tlsCaSecret -}}
true
{{- end -}}
{{- end -}}

{{/* The environment of every Pystol container: config map, Redis URL (with the password from
its Secret, through Kubernetes' $(VAR) expansion: the Deployment shows $(PYSTOL_REDIS_PASSWORD),
never the password), signing key, API tokens. */}}
{{- define "pystol.env" -}}
{{- $component := .component }}
{{- with .ctx }}
envFrom:
  - configMapRef:
      name: {{ include "pystol.fullname" . }}-config
env:
{{- if .Values.redis.enabled }}
  - name: PYSTOL_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ include "pystol.redisSecret" . }}
        key: {{ include "pystol.redisSecretKey" . }}
  - name: PYSTOL_REDIS_URL
    value: {{ printf "redis://:$(PYSTOL_REDIS_PASSWORD)@%s-redis:6379/%d" (include "pystol.fullname" .) (int .Values.redis.db) | quote }}
{{- else }}
{{- $r := .Values.externalRedis }}
{{- $auth := ternary ":$(PYSTOL_REDIS_PASSWORD)@" "" (ne $r.existingSecret "") }}
{{- if $r.existingSecret }}
  - name: PYSTOL_REDIS_PASSWORD
    valueFrom:
      secretKeyRef:
        name: {{ $r.existingSecret }}
        key: {{ $r.existingSecretPasswordKey }}
{{- end }}
{{- if $r.sentinel.master }}
{{- $sentinels := list }}
{{- range $r.sentinel.hosts }}
{{- $sentinels = append $sentinels (printf "sentinel://%s%s" $auth .) }}
{{- end }}
  - name: PYSTOL_REDIS_URL
    value: {{ printf "%s/%d" (join ";" $sentinels) (int $r.db) | quote }}
{{- else }}
{{- $query := "" }}
{{- if include "pystol.redisCaMounted" . }}
{{- $query = printf "?ssl_ca_certs=%s/%s" (include "pystol.redisCaDir" .) $r.tlsCaSecretKey }}
{{- end }}
  - name: PYSTOL_REDIS_URL
    value: {{ printf "%s://%s%s:%d/%d%s" (ternary "rediss" "redis" $r.tls) $auth $r.host (int $r.port) (int $r.db) $query | quote }}
{{- end }}
{{- end }}
  - name: PYSTOL_SIGNING_KEY
    valueFrom:
      secretKeyRef:
        name: {{ include "pystol.signingKeySecret" . }}
        key: {{ ternary .Values.signingKey.existingSecretKey "key" (ne .Values.signingKey.existingSecret "") }}
{{- if and (eq $component "api") .Values.metricsToken.existingSecret }}
  - name: PYSTOL_METRICS_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ .Values.metricsToken.existingSecret }}
        key: {{ .Values.metricsToken.existingSecretKey }}
{{- end }}
{{- if eq $component "api" }}
  - name: PYSTOL_API_TOKENS
    valueFrom:
      secretKeyRef:
        name: {{ include "pystol.tokensSecret" . }}
        key: {{ include "pystol.tokensKey" . }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level settings shared by every Pystol pod: (dict "ctx" $ "component" "api" "values" .Values.api) */}}
{{- define "pystol.podMeta" -}}
labels:
  {{- include "pystol.componentLabels" (dict "ctx" .ctx "component" .component) | nindent 2 }}
  {{- with .ctx.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print .ctx.Template.BasePath "/configmap.yaml") .ctx | sha256sum }}
  {{- with .ctx.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

{{- define "pystol.podCommon" -}}
serviceAccountName: {{ include "pystol.serviceAccountName" (dict "ctx" .ctx "component" .component) }}
automountServiceAccountToken: {{ ne .component "beat" }}
securityContext:
  {{- toYaml .ctx.Values.podSecurityContext | nindent 2 }}
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: {{ .ctx.Values.tmpSizeLimit }}
  - name: policy
    configMap:
      name: {{ include "pystol.fullname" .ctx }}-policy
{{- if include "pystol.redisCaMounted" .ctx }}
  - name: redis-ca
    secret:
      secretName: {{ .ctx.Values.externalRedis.tlsCaSecret }}
{{- end }}
{{- end -}}

{{- define "pystol.containerCommon" -}}
image: {{ include "pystol.image" .ctx }}
imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
securityContext:
  {{- toYaml .ctx.Values.securityContext | nindent 2 }}
resources:
  {{- toYaml .values.resources | nindent 2 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: policy
    mountPath: /etc/pystol/policy
    readOnly: true
{{- if include "pystol.redisCaMounted" .ctx }}
  - name: redis-ca
    mountPath: {{ include "pystol.redisCaDir" .ctx }}
    readOnly: true
{{- end }}
{{ include "pystol.env" . }}
{{- end -}}
