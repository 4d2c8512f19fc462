{{/*
Names, labels and the pieces every role's pod shares. A role's Deployment
(deployment-<role>.yaml) calls "mamori.deployment" with its own ports, env
and volumes; everything else is here once.
*/}}

{{- define "mamori.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mamori.fullname" -}}
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

{{/* "<fullname>-<suffix>", within 63 characters. Call with (list $ "suffix"). */}}
{{- define "mamori.component" -}}
{{- $root := index . 0 }}
{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "mamori.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "mamori.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "mamori.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "mamori.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mamori.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component. Call with (list $ "ingest"). */}}
{{- define "mamori.componentLabels" -}}
{{ include "mamori.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "mamori.componentSelector" -}}
{{ include "mamori.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "mamori.serviceAccountName" -}}
{{- default (include "mamori.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "mamori.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* ---- Secrets: the release's own Secret or the operator's. ---- */}}

{{- define "mamori.secretName" -}}
{{- include "mamori.fullname" . }}
{{- end }}

{{- define "mamori.smtpEnabled" -}}
{{- if or .Values.smtp.url .Values.smtp.existingSecret }}true{{ end }}
{{- end }}

{{/* Whether the release's Secret holds anything (some value not from an existing Secret). */}}
{{- define "mamori.ownSecret" -}}
{{- if or (not .Values.postgresql.existingSecret) (not .Values.redis.existingSecret) (not .Values.keyEncryptionKey.existingSecret) (and .Values.smtp.url (not .Values.smtp.existingSecret)) }}true{{ end }}
{{- end }}

{{- define "mamori.postgresql.secret" -}}
{{- default (include "mamori.secretName" .) .Values.postgresql.existingSecret }}
{{- end }}

{{- define "mamori.postgresql.key" -}}
{{- if .Values.postgresql.existingSecret }}{{ .Values.postgresql.urlKey }}{{ else }}database-url{{ end }}
{{- end }}

{{/* The migration URL's Secret: migrationExistingSecret, else existingSecret, else the Job's own hook Secret. */}}
{{- define "mamori.migration.existingSecret" -}}
{{- default .Values.postgresql.existingSecret .Values.postgresql.migrationExistingSecret }}
{{- end }}

{{- define "mamori.migration.secret" -}}
{{- default (include "mamori.component" (list . "migrate")) (include "mamori.migration.existingSecret" .) }}
{{- end }}

{{- define "mamori.migration.key" -}}
{{- if include "mamori.migration.existingSecret" . }}{{ default .Values.postgresql.urlKey .Values.postgresql.migrationUrlKey }}{{ else }}migration-database-url{{ end }}
{{- end }}

{{- define "mamori.redis.secret" -}}
{{- default (include "mamori.secretName" .) .Values.redis.existingSecret }}
{{- end }}

{{- define "mamori.redis.key" -}}
{{- if .Values.redis.existingSecret }}{{ .Values.redis.urlKey }}{{ else }}redis-url{{ end }}
{{- end }}

{{- define "mamori.smtp.secret" -}}
{{- default (include "mamori.secretName" .) .Values.smtp.existingSecret }}
{{- end }}

{{- define "mamori.smtp.key" -}}
{{- if .Values.smtp.existingSecret }}{{ .Values.smtp.urlKey }}{{ else }}smtp-url{{ end }}
{{- end }}

{{- define "mamori.kek.secret" -}}
{{- default (include "mamori.secretName" .) .Values.keyEncryptionKey.existingSecret }}
{{- end }}

{{- define "mamori.kek.key" -}}
{{- if .Values.keyEncryptionKey.existingSecret }}{{ .Values.keyEncryptionKey.key }}{{ else }}key-encryption-key{{ end }}
{{- end }}

{{- define "mamori.ingestTls.secret" -}}
{{- default (include "mamori.component" (list . "ingest-tls")) .Values.ingest.tls.existingSecret }}
{{- end }}

{{- define "mamori.policyTls.secret" -}}
{{- default (include "mamori.component" (list . "policy-tls")) .Values.policy.tls.existingSecret }}
{{- end }}

{{/* MAMORI_PUBLIC_URL: the value, else the Ingress's host, else unset. */}}
{{- define "mamori.publicUrl" -}}
{{- if .Values.publicUrl }}
{{- .Values.publicUrl }}
{{- else if and .Values.ingress.enabled .Values.ingress.host }}
{{- printf "%s://%s" (ternary "https" "http" (ne .Values.ingress.tlsSecretName "")) .Values.ingress.host }}
{{- end }}
{{- end }}

{{/* The policy service's in-cluster address, as its certificate names it. */}}
{{- define "mamori.policyHost" -}}
{{- printf "%s.%s.svc" (include "mamori.component" (list . "policy")) .Release.Namespace }}
{{- end }}

{{- define "mamori.listen" -}}
{{- $root := index . 0 }}
{{- printf "%s:%v" $root.Values.bindAddress (index . 1) }}
{{- end }}

{{/* ---- The TOML config file. ----
Helm reads every number in values as a float, and toToml would write
`4.0` where the binary wants an integer: this writes whole numbers as
integers, strings as TOML basic strings (JSON escapes are valid TOML), and
booleans as they are. The schema allows only scalars in the file. */}}
{{- define "mamori.tomlValue" -}}
{{- if kindIs "string" . }}{{ toJson . }}
{{- else if kindIs "bool" . }}{{ ternary "true" "false" . }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}{{ . }}
{{- else if kindIs "float64" . }}{{ if eq (float64 (int64 .)) . }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}{{ fail (printf "config: %v is not a string, number or boolean" .) }}
{{- end }}
{{- end }}

{{- define "mamori.toml" -}}
{{- $config := .Values.config -}}
# Rendered from the chart's `config` value. MAMORI_* variables (set by the
# chart for addresses, TLS files, URLs and secrets) override it.
{{- range $k := keys $config | sortAlpha }}
{{- $v := index $config $k }}
{{- if not (kindIs "map" $v) }}
{{ $k }} = {{ include "mamori.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $section := keys $config | sortAlpha }}
{{- $table := index $config $section }}
{{- if kindIs "map" $table }}

[{{ $section }}]
{{- range $k := keys $table | sortAlpha }}
{{ $k }} = {{ include "mamori.tomlValue" (index $table $k) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* ---- Env and volumes shared by the roles. ---- */}}

{{- define "mamori.env.common" -}}
- name: MAMORI_CONFIG
  value: /etc/mamori/config/mamori.toml
- name: MAMORI_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mamori.postgresql.secret" . }}
      key: {{ include "mamori.postgresql.key" . }}
- name: MAMORI_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.otlpEndpoint | quote }}
{{- end }}
{{- end }}

{{- define "mamori.env.redis" -}}
- name: MAMORI_REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mamori.redis.secret" . }}
      key: {{ include "mamori.redis.key" . }}
{{- end }}

{{- define "mamori.env.kek" -}}
- name: MAMORI_KEY_ENCRYPTION_KEY_FILE
  value: /etc/mamori/kek/key
{{- end }}

{{- define "mamori.env.mail" -}}
{{- if include "mamori.smtpEnabled" . }}
- name: MAMORI_SMTP_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "mamori.smtp.secret" . }}
      key: {{ include "mamori.smtp.key" . }}
{{- end }}
{{- with include "mamori.publicUrl" . }}
- name: MAMORI_PUBLIC_URL
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{- define "mamori.volume.kek" -}}
- name: kek
  secret:
    secretName: {{ include "mamori.kek.secret" . }}
    defaultMode: 0440
    items:
      - key: {{ include "mamori.kek.key" . }}
        path: key
{{- end }}

{{- define "mamori.mount.kek" -}}
- name: kek
  mountPath: /etc/mamori/kek
  readOnly: true
{{- end }}

{{/* A server's own certificate and key from a TLS Secret. Call with the Secret's name. */}}
{{- define "mamori.volume.tls" -}}
- name: tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}

{{- define "mamori.mount.tls" -}}
- name: tls
  mountPath: /etc/mamori/tls
  readOnly: true
{{- end }}

{{/* Restarts pods when what they read from the chart changes. */}}
{{- define "mamori.checksums" -}}
checksum/config: {{ include "mamori.toml" . | sha256sum }}
checksum/secret: {{ list .Values.postgresql .Values.redis .Values.smtp .Values.keyEncryptionKey | toJson | sha256sum }}
{{- end }}

{{/*
One role's Deployment. Call with a dict:
  root       the top context ($)
  role       ingest | writer | alerting | policy | gateway
  ports      container ports (list of dicts: name, port)
  env        the role's own env entries (YAML text)
  volumes    the role's own volumes (YAML text)
  mounts     the role's own volume mounts (YAML text)
*/}}
{{- define "mamori.deployment" -}}
{{- $root := .root }}
{{- $role := .role }}
{{- $v := index $root.Values $role }}
{{- $autoscaling := and (hasKey $v "autoscaling") $v.autoscaling.enabled }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "mamori.component" (list $root $role) }}
  labels:
    {{- include "mamori.componentLabels" (list $root $role) | nindent 4 }}
spec:
  {{- if not $autoscaling }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "mamori.componentSelector" (list $root $role) | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 0
  template:
    metadata:
      labels:
        {{- include "mamori.componentSelector" (list $root $role) | nindent 8 }}
        mamori/ops: "true"
        {{- with $root.Values.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        {{- include "mamori.checksums" $root | nindent 8 }}
        {{- with merge (deepCopy $v.podAnnotations) $root.Values.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "mamori.serviceAccountName" $root }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with (default $root.Values.nodeSelector $v.nodeSelector) }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default $root.Values.tolerations $v.tolerations) }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with (default $root.Values.affinity $v.affinity) }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.topologySpreadConstraints }}
      topologySpreadConstraints:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $role }}
          image: {{ include "mamori.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ $role | quote }}]
          ports:
            {{- range .ports }}
            - name: {{ .name }}
              containerPort: {{ .port }}
              protocol: TCP
            {{- end }}
            - name: ops
              containerPort: {{ $v.opsPort }}
              protocol: TCP
          env:
            {{- include "mamori.env.common" $root | nindent 12 }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: ops
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: ops
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- if gt (int $root.Values.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ $root.Values.preStopSleepSeconds }}
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/mamori/config
              readOnly: true
            - name: tmp
              mountPath: /tmp
            {{- with .mounts }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "mamori.component" (list $root "config") }}
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end }}
