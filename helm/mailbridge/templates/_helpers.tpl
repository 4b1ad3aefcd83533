{{/* Names, labels and the pieces every mailbridge pod shares. */}}

{{- define "mailbridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The resource name prefix; components append "-edge", "-postgresql-headless", … and 40 characters leave room for the longest within the 63 of a name. */}}
{{- define "mailbridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "mailbridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mailbridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mailbridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mailbridge.labels" -}}
helm.sh/chart: {{ include "mailbridge.chart" . }}
{{ include "mailbridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mailbridge
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component. Call with (dict "ctx" $ "component" "edge"). */}}
{{- define "mailbridge.componentSelectorLabels" -}}
{{ include "mailbridge.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mailbridge.componentLabels" -}}
{{ include "mailbridge.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "mailbridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mailbridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mailbridge.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* The Secret holding DATABASE_URL, the master key and the Entra app credentials. */}}
{{- define "mailbridge.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "mailbridge.fullname" .)) }}
{{- end }}

{{- define "mailbridge.tlsSecretName" -}}
{{- if eq .Values.tls.source "existingSecret" }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-edge-tls" (include "mailbridge.fullname" .) }}
{{- end }}
{{- end }}

{{- define "mailbridge.postgresqlName" -}}
{{- printf "%s-postgresql" (include "mailbridge.fullname" .) }}
{{- end }}

{{/* Fails rendering on combinations the schema cannot express. */}}
{{- define "mailbridge.validate" -}}
{{- if and .Values.postgresql.enabled .Values.secrets.existingSecret }}
{{- fail "postgresql.enabled builds DATABASE_URL itself and cannot be combined with secrets.existingSecret: use one or the other" }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.secrets.databaseUrl }}
{{- fail "postgresql.enabled builds DATABASE_URL itself: leave secrets.databaseUrl empty" }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.secrets.databaseUrlFrom.name }}
{{- fail "postgresql.enabled builds DATABASE_URL itself: leave secrets.databaseUrlFrom.name empty" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "worker: use either autoscaling (an HPA on CPU) or keda (a ScaledObject, which makes its own HPA), not both" }}
{{- end }}
{{- if eq (int .Values.web.port) (int .Values.web.metricsPort) }}
{{- fail "web: port and metricsPort must differ (the metrics stay off the port an ingress publishes)" }}
{{- end }}
{{- $l := .Values.edge.listeners }}
{{- if not (or $l.submission.enabled $l.submissions.enabled $l.relay.enabled) }}
{{- fail "edge.listeners: enable at least one of submission, submissions and relay" }}
{{- end }}
{{- $ports := list (int $l.submission.containerPort) (int $l.submissions.containerPort) (int $l.relay.containerPort) (int $l.legacySubmission.containerPort) (int $l.legacySubmissions.containerPort) (int .Values.edge.metricsPort) }}
{{- if ne (len ($ports | uniq)) 6 }}
{{- fail "edge: the listeners' containerPorts and metricsPort must all differ" }}
{{- end }}
{{- end }}

{{/* A Helm hook annotation set. Call with (dict "hook" "pre-install,pre-upgrade" "weight" "-10" "policy" "before-hook-creation"). */}}
{{- define "mailbridge.hookAnnotations" -}}
helm.sh/hook: {{ .hook }}
helm.sh/hook-weight: {{ .weight | quote }}
helm.sh/hook-delete-policy: {{ .policy }}
{{- end }}

{{/*
The init container that migrates the schema before a component starts: it waits for
PostgreSQL (up to migrations.waitSeconds, then fails and is restarted), then runs
`mailbridge migrate`. sqlx takes an advisory lock while it migrates, so pods starting
together take turns and the later ones find nothing to do. Call with (dict "ctx" $).
*/}}
{{- define "mailbridge.migrateInitContainer" -}}
{{- $ctx := .ctx }}
{{- $m := $ctx.Values.migrations }}
- name: migrate
  image: {{ include "mailbridge.image" $ctx }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  args: ["migrate", "--wait", {{ $m.waitSeconds | quote }}]
  env:
    {{- include "mailbridge.env" (dict "ctx" $ctx "entra" false) | trim | nindent 4 }}
    - name: MAILBRIDGE_DATABASE_MAX_CONNECTIONS
      value: "2"
  resources:
    {{- toYaml $m.resources | nindent 4 }}
  securityContext:
    {{- toYaml $ctx.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "mailbridge.volumeMounts" $ctx | nindent 4 }}
{{- end }}

{{/* A component's init containers: the migration (if on), then its own. Call with (dict "ctx" $ "component" .Values.edge). */}}
{{- define "mailbridge.initContainers" -}}
{{- if or .ctx.Values.migrations.enabled .component.initContainers }}
initContainers:
{{- if .ctx.Values.migrations.enabled }}
{{- include "mailbridge.migrateInitContainer" (dict "ctx" .ctx) | trim | nindent 2 }}
{{- end }}
{{- with .component.initContainers }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment of a component: its pool size, then its own extraEnv. */}}
{{- define "mailbridge.componentEnv" -}}
{{- with .databaseMaxConnections }}
- name: MAILBRIDGE_DATABASE_MAX_CONNECTIONS
  value: {{ int64 . | quote }}
{{- end }}
{{- with .extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod annotations: a checksum of the chart-made Secret's inputs (so pods restart when they change), the global and the component's own. Call with (dict "ctx" $ "component" .Values.edge). */}}
{{- define "mailbridge.podAnnotations" -}}
{{- $ctx := .ctx }}
{{- $annotations := dict }}
{{- if not $ctx.Values.secrets.existingSecret }}
{{- $_ := set $annotations "checksum/secrets" (toJson (list $ctx.Values.secrets $ctx.Values.postgresql.auth) | sha256sum) }}
{{- end }}
{{- with .component.microsoftDeadlines }}
{{- $_ := set $annotations "checksum/microsoft-deadlines" (. | sha256sum) }}
{{- end }}
{{- $annotations = merge $annotations (.component.podAnnotations | default dict) ($ctx.Values.podAnnotations | default dict) }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Pod labels: the component's selector labels, the global and the component's own. */}}
{{- define "mailbridge.podLabels" -}}
{{ include "mailbridge.componentLabels" (dict "ctx" .ctx "component" .name) }}
{{- with .ctx.Values.podLabels }}
{{ toYaml . }}
{{- end }}
{{- with .component.podLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Environment shared by every mailbridge container. Call with (dict "ctx" $ "entra" true)
for the MSP app's client id (public: the web builds admin-consent URLs with it), and
"entraSecret" true as well for its secret, which only the workers get. */}}
{{- define "mailbridge.env" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- $secret := include "mailbridge.secretName" $ctx }}
- name: MAILBRIDGE_LOG_FORMAT
  value: {{ $v.config.logFormat | quote }}
- name: RUST_LOG
  value: {{ $v.config.logLevel | quote }}
- name: MAILBRIDGE_HOSTNAME
  value: {{ $v.hostname | quote }}
{{- with $v.config.webhookAllowedNetworks }}
- name: MAILBRIDGE_WEBHOOK_ALLOWED_NETWORKS
  value: {{ . | quote }}
{{- end }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if $v.secrets.databaseUrlFrom.name }}
      {{- /* A Secret of its own, e.g. CloudNativePG's <cluster>-app with key uri. */}}
      name: {{ $v.secrets.databaseUrlFrom.name }}
      key: {{ $v.secrets.databaseUrlFrom.key }}
      {{- else }}
      name: {{ $secret }}
      key: {{ $v.secrets.keys.databaseUrl }}
      {{- end }}
      {{- /* Optional so that a missing URL ends in mailbridge's own clear error ("DATABASE_URL is not set") instead of a pod stuck in CreateContainerConfigError. */}}
      optional: true
- name: MAILBRIDGE_MASTER_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.masterKey }}
- name: MAILBRIDGE_MASTER_KEY_PREVIOUS
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.masterKeyPrevious }}
      optional: true
{{- if .entra }}
- name: MAILBRIDGE_ENTRA_CLIENT_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.entraClientId }}
      optional: true
{{- end }}
{{- if .entraSecret }}
- name: MAILBRIDGE_ENTRA_CLIENT_SECRET
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $v.secrets.keys.entraClientSecret }}
      optional: true
{{- end }}
{{- with $v.config.m365 }}
{{- if .cloud }}
- name: MAILBRIDGE_M365_CLOUD
  value: {{ .cloud | quote }}
{{- end }}
{{- if .loginUrl }}
- name: MAILBRIDGE_M365_LOGIN_URL
  value: {{ .loginUrl | quote }}
{{- end }}
{{- if .graphUrl }}
- name: MAILBRIDGE_M365_GRAPH_URL
  value: {{ .graphUrl | quote }}
{{- end }}
{{- if .smtp }}
- name: MAILBRIDGE_M365_SMTP
  value: {{ .smtp | quote }}
{{- end }}
{{- if .graphResource }}
- name: MAILBRIDGE_M365_GRAPH_RESOURCE
  value: {{ .graphResource | quote }}
{{- end }}
{{- if .exchangeResource }}
- name: MAILBRIDGE_M365_EXCHANGE_RESOURCE
  value: {{ .exchangeResource | quote }}
{{- end }}
{{- end }}
{{- if $v.config.extraCa.configMap }}
- name: MAILBRIDGE_EXTRA_CA_FILE
  value: /etc/mailbridge/extra-ca/{{ $v.config.extraCa.key }}
{{- end }}
{{- with $v.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes every mailbridge pod mounts: /tmp, and the extra CA bundle. */}}
{{- define "mailbridge.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if .Values.config.extraCa.configMap }}
- name: extra-ca
  configMap:
    name: {{ .Values.config.extraCa.configMap }}
    items:
      - key: {{ .Values.config.extraCa.key }}
        path: {{ .Values.config.extraCa.key }}
{{- end }}
{{- end }}

{{- define "mailbridge.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
{{- if .Values.config.extraCa.configMap }}
- name: extra-ca
  mountPath: /etc/mailbridge/extra-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod spec fields shared by the Deployments. Call with (dict "ctx" $ "name" "edge" "component" .Values.edge). */}}
{{- define "mailbridge.podScheduling" -}}
{{- $ctx := .ctx }}
serviceAccountName: {{ include "mailbridge.serviceAccountName" $ctx }}
automountServiceAccountToken: {{ $ctx.Values.serviceAccount.automountServiceAccountToken }}
{{- with $ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
{{- with .component.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .component.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .component.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if .component.topologySpreadConstraints }}
topologySpreadConstraints:
{{- $selector := include "mailbridge.componentSelectorLabels" (dict "ctx" $ctx "component" .name) | fromYaml }}
{{- range .component.topologySpreadConstraints }}
{{- $constraint := deepCopy . }}
{{- if not (hasKey $constraint "labelSelector") }}
{{- $_ := set $constraint "labelSelector" (dict "matchLabels" $selector) }}
{{- if not (hasKey $constraint "matchLabelKeys") }}
{{- $_ := set $constraint "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
{{- end }}
  - {{ toYaml $constraint | nindent 4 | trim }}
{{- end }}
{{- end }}
{{- end }}

{{/* Probes of a component, each only if set. */}}
{{- define "mailbridge.probes" -}}
{{- with .startupProbe }}
startupProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .livenessProbe }}
livenessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .readinessProbe }}
readinessProbe:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
