{{/* Chart name, truncated to the 63 characters a label allows. */}}
{{- define "souk.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects; the release name alone when it already holds the chart name. */}}
{{- define "souk.fullname" -}}
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

{{/* Name of the operator's objects (Deployment, RBAC, Service). */}}
{{- define "souk.operatorName" -}}
{{- printf "%s-operator" (include "souk.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "souk.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the chart. */}}
{{- define "souk.labels" -}}
helm.sh/chart: {{ include "souk.chart" . }}
app.kubernetes.io/name: {{ include "souk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: souk
{{- end }}

{{/* Selector of the operator's pods (immutable: never add to it). */}}
{{- define "souk.selectorLabels" -}}
app.kubernetes.io/name: {{ include "souk.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "souk.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "souk.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator's image reference. */}}
{{- define "souk.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* "true" when leader election is on: asked for (the default), or needed for several replicas. */}}
{{- define "souk.leaderElection" -}}
{{- if or .Values.leaderElection.enabled (gt (int .Values.replicaCount) 1) }}true{{ end }}
{{- end }}

{{- define "souk.adminSecretName" -}}
{{- default (printf "%s-admin" .Values.shop.name) .Values.shop.adminSecret.name }}
{{- end }}

{{/* The Shop whose gateway `helm test` checks. */}}
{{- define "souk.testShopName" -}}
{{- default .Values.shop.name .Values.tests.shopName }}
{{- end }}
