{{/* The release's name for its objects (63 characters at most). */}}
{{- define "ltx-extend.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "ltx-extend.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "ltx-extend.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "ltx-extend.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "ltx-extend.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "ltx-extend.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The operator's RBAC rules: operator/ltx_operator/rbac.yaml, the one definition. */}}
{{- define "ltx-extend.rbacRules" -}}
{{- (.Files.Get "files/rbac.yaml" | fromYaml).rules | toJson -}}
{{- end -}}

{{/* Rules on cluster-scoped resources, which a namespaced Role cannot grant. */}}
{{- define "ltx-extend.isClusterRule" -}}
{{- if or (has "customresourcedefinitions" .resources) (has "namespaces" .resources) -}}true{{- end -}}
{{- end -}}

{{/* A list of words as one shell-quoted string (the operator splits it with shlex). */}}
{{- define "ltx-extend.shellWords" -}}
{{- $words := list -}}
{{- range . -}}{{- $words = append $words (squote .) -}}{{- end -}}
{{- join " " $words -}}
{{- end -}}
