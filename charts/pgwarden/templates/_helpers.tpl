{{/*
Chart name, truncated to 63 characters (a DNS label).
*/}}
{{- define "pgwarden.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: `<release>-pgwarden`, or the release name alone when it already contains the chart name.
*/}}
{{- define "pgwarden.fullname" -}}
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

{{/*
Name of the operator's Deployment, Service, ServiceAccount and RBAC objects: `<fullname>-operator`.
*/}}
{{- define "pgwarden.operatorName" -}}
{{- printf "%s-operator" (include "pgwarden.fullname" . | trunc 54 | trimSuffix "-") }}
{{- end }}

{{- define "pgwarden.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels of the operator pods. `app.kubernetes.io/component: operator` keeps them apart from
the PostgreSQL pods, which also carry `app.kubernetes.io/name: pgwarden` (with the cluster's name as
`app.kubernetes.io/instance`).
*/}}
{{- define "pgwarden.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pgwarden.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Labels on every object of the chart.
*/}}
{{- define "pgwarden.labels" -}}
helm.sh/chart: {{ include "pgwarden.chart" . }}
{{ include "pgwarden.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pgwarden
{{- end }}

{{- define "pgwarden.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pgwarden.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The operator image, repository:tag. The same reference goes to the operator as
PGWARDEN_AGENT_IMAGE for the init container of the PostgreSQL pods.
*/}}
{{- define "pgwarden.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion | toString }}
{{- if eq $tag "latest" }}
{{- fail "image.tag: 'latest' is not allowed; pin a version (empty means the chart's appVersion)" }}
{{- end }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}

{{/*
The name of the operator's own leader-election Lease (fixed by the operator).
*/}}
{{- define "pgwarden.leaderLease" -}}
pgwarden-operator
{{- end }}
