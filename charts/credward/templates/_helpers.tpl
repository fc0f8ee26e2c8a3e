{{/* Names, labels and the values several templates share. */}}

{{- define "credward.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's base name: "credward" for `helm install credward`, else "<release>-credward". */}}
{{- define "credward.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "credward.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "credward.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component ("operator" or "security"): call with (list $ "operator"). */}}
{{- define "credward.selectorLabels" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ include "credward.name" $ }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "credward.componentLabels" -}}
{{ include "credward.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "credward.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "credward.operatorServiceAccount" -}}
{{- default (printf "%s-operator" (include "credward.fullname" .)) .Values.operator.serviceAccount.name -}}
{{- end -}}

{{- define "credward.securityServiceAccount" -}}
{{- default (printf "%s-security" (include "credward.fullname" .)) .Values.security.serviceAccount.name -}}
{{- end -}}

{{- define "credward.securityService" -}}
{{- printf "%s-security" (include "credward.fullname" .) -}}
{{- end -}}

{{- define "credward.webhookService" -}}
{{- printf "%s-webhook" (include "credward.fullname" .) -}}
{{- end -}}

{{/* Where workloads and the operator reach the security service. */}}
{{- define "credward.securityBaseURL" -}}
{{- default (printf "http://%s.%s.svc:%d" (include "credward.securityService" .) .Release.Namespace (int .Values.security.port)) .Values.security.baseURL -}}
{{- end -}}

{{- define "credward.issuer" -}}
{{- default (include "credward.securityBaseURL" .) .Values.security.issuer -}}
{{- end -}}

{{- define "credward.hashKeySecret" -}}
{{- default (printf "%s-hash-key" (include "credward.fullname" .)) .Values.sharedSecrets.hashKey.name -}}
{{- end -}}

{{- define "credward.signingKeysSecret" -}}
{{- default (printf "%s-signing-keys" (include "credward.fullname" .)) .Values.sharedSecrets.signingKeys.name -}}
{{- end -}}

{{- define "credward.leaderElectionLease" -}}
{{- default (printf "%s-operator" (include "credward.fullname" .)) .Values.operator.leaderElection.lease -}}
{{- end -}}

{{- define "credward.webhookTLSSecret" -}}
{{- printf "%s-webhook-tls" (include "credward.fullname" .) -}}
{{- end -}}

{{- define "credward.webhookConfiguration" -}}
{{- include "credward.fullname" . -}}
{{- end -}}

{{/* The restricted Pod Security Standard, pod level: numeric non-root user, RuntimeDefault seccomp. */}}
{{- define "credward.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* The restricted Pod Security Standard, container level. */}}
{{- define "credward.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}
