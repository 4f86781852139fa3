{{/* The release's full name: "pdm-operator" for a release of that name. */}}
{{- define "pdm-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pdm-operator.serviceAccountName" -}}
{{- default (include "pdm-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "pdm-operator.selectorLabels" -}}
app.kubernetes.io/name: pdm-operator
{{- if not .Values.manifests.plain }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- end -}}

{{- define "pdm-operator.labels" -}}
{{ include "pdm-operator.selectorLabels" . }}
app.kubernetes.io/part-of: pdm-operator
{{- if not .Values.manifests.plain }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
{{- end -}}

{{- define "pdm-operator.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}

{{- define "pdm-operator.ha" -}}
{{- if gt (int .Values.replicaCount) 1 }}true{{ end -}}
{{- end -}}

{{/*
What the operator may do where it watches: as a ClusterRole (every
namespace) or as a Role in each watched namespace, the same rules.
*/}}
{{- define "pdm-operator.watchRules" -}}
# Watch migrations (Kopf), read them (workers, the watch audit, dry-run diffs).
# Create: an environment's spec.schedule starts a run from the template its
# platform admin wrote, and its spec.retry makes the retry of a failed one (a
# copy of that one's spec, in its namespace); both are held to the same
# environment rules as any other.
- apiGroups: [pdm-operator.io]
  resources: [postdeploymigrations]
  verbs: [get, list, watch, create]
# Write conditions, reports, diffs: the status subresource only.
- apiGroups: [pdm-operator.io]
  resources: [postdeploymigrations/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on Jobs and ConfigMaps (checked
# where OwnerReferencesPermissionEnforcement is on).
- apiGroups: [pdm-operator.io]
  resources: [postdeploymigrations/finalizers]
  verbs: [update]
# The migration Jobs: create once, follow (watch), adopt (list by uid label),
# find the chart's migrations Job (list by label), suspend one whose pod can
# never start (patch), so that it cannot run after its migration has failed.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
# Eviction protection: a PodDisruptionBudget per migration Job, owned by the
# Job (garbage-collected with it), created once.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create]
# The image source and the rolledOut gate.
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get]
# Digest pinning (the source Deployment's pods), the failed pod's exit code,
# and the pre-flight pod's end (watched, selected by its labels).
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# The failed migration pod's log tail, and the pre-flight's answer.
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# Long dry-run diffs.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [create, update]
# Tokens for GitLab and Sentry, read at each delivery (spec.tracking.*.tokenSecretRef).
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# An Event for every transition (and Kopf's own error events); the Job
# controller's FailedCreate events on a migration Job whose pod cannot be made.
- apiGroups: [""]
  resources: [events]
  verbs: [create, list]
{{- end -}}
