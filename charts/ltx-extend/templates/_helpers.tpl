{{/* The release's name for its objects (63 characters at most). */}}
{{- define "ltx-extend.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ltx-extend.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "ltx-extend.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "ltx-extend.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The base model in use, in words (for the NOTES). */}}
{{- define "ltx-extend.model" -}}
{{- if .Values.model.claimName -}}
the claim {{ .Values.model.claimName }}{{ with .Values.model.subPath }}, folder {{ . }}{{ end }}
{{- else if .Values.model.url -}}
{{ .Values.model.url }}
{{- else -}}
none: each training must set spec.model (model.allowTinyModel is on)
{{- end -}}
{{- end -}}

{{- define "ltx-extend.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ltx-extend.name" . }}
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


{{/* A list of words as one shell-quoted string (the operator splits it with shlex). */}}
{{- define "ltx-extend.shellWords" -}}
{{- $words := list -}}
{{- range . -}}{{- $words = append $words (squote .) -}}{{- end -}}
{{- join " " $words -}}
{{- end -}}
