{{/* Names and labels shared by every template. */}}

{{- define "djangoscale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "djangoscale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "djangoscale.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "djangoscale.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "djangoscale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "djangoscale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "djangoscale.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "djangoscale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: djangoscale
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "djangoscale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "djangoscale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Service of the metrics API; the serving certificate is issued for its DNS names. */}}
{{- define "djangoscale.metricsApiService" -}}
{{- printf "%s-metrics-api" (include "djangoscale.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "djangoscale.tlsSecretName" -}}
{{- if eq .Values.metricsApi.tls.mode "secret" }}
{{- required "metricsApi.tls.existingSecret is required with metricsApi.tls.mode=secret" .Values.metricsApi.tls.existingSecret }}
{{- else }}
{{- printf "%s-metrics-api-tls" (include "djangoscale.fullname" .) }}
{{- end }}
{{- end }}

{{- define "djangoscale.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* Cluster-wide when no namespace is listed. */}}
{{- define "djangoscale.clusterwide" -}}
{{- if not .Values.watch.namespaces }}true{{ end }}
{{- end }}

{{/* The rules the operator needs in each namespace it watches (see rbac.yaml). */}}
{{- define "djangoscale.namespacedRules" -}}
- apiGroups: [djangoscale.io]
  resources: [djangoservices]
  verbs: [get, list, watch, patch]
- apiGroups: [djangoscale.io]
  resources: [djangoservices/status]
  verbs: [get, patch, update]
# delete: pruning a Celery worker group taken out of the spec (only if the DjangoService
# controls it; reconcile.prune).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [patch]
# services list, delete: pruning the pooler's Service when pooling.mode pooler goes.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
# The metrics collector reads the app pods' request rates.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
{{- end }}
