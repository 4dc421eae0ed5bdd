{{- define "lowbit.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lowbit.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "lowbit.labels" -}}
{{ include "lowbit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lowbit
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "lowbit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lowbit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "lowbit.image" -}}
{{- if .digest -}}
{{- printf "%s@%s" .repository .digest -}}
{{- else -}}
{{- printf "%s:%s" .repository (default .appVersion .tag) -}}
{{- end -}}
{{- end -}}

{{- define "lowbit.operatorImage" -}}
{{- include "lowbit.image" (dict "repository" .Values.image.repository "digest" .Values.image.digest "tag" .Values.image.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{- define "lowbit.engineImage" -}}
{{- include "lowbit.image" (dict "repository" .Values.engine.repository "digest" .Values.engine.digest "tag" .Values.engine.tag "appVersion" .Chart.AppVersion) -}}
{{- end -}}

{{/* The namespaces the operator watches: [] in scope cluster. */}}
{{- define "lowbit.validate" -}}
{{- if eq .Values.scope "namespaced" -}}
{{- if ne (len .Values.watchNamespaces) 1 -}}
{{- fail "watchNamespaces: scope namespaced needs exactly one namespace (the operator watches one namespace per release); install one release per namespace" -}}
{{- end -}}
{{- else if .Values.watchNamespaces -}}
{{- fail "watchNamespaces: only used with scope: namespaced; set scope: namespaced or remove watchNamespaces" -}}
{{- end -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) -}}
{{- fail "leaderElection.enabled: must be true when replicaCount > 1 (two leaders would reconcile the same objects)" -}}
{{- end -}}
{{- end -}}

{{/*
The rules the reconcilers need in a watched namespace, exactly what src/Lowbit.Operator calls:
informers list+watch pods, deployments, services, jobs and the three kinds; StatusWriter replaces the status subresources;
ChildApplier reads (get) a child the cache has not seen before it server-side-applies (patch; create when absent) jobs, deployments, services, deletes jobs and patches
deployments/scale (replicas without a roll); the FineTuneJob and QuantizedModel reconcilers read pods/log (progress
and its watchdog); EventRecorder creates events.
*/}}
{{- define "lowbit.workloadRules" -}}
- apiGroups: ["lowbit.dev"]
  resources: ["quantizedmodels", "finetunejobs", "inferenceendpoints"]
  verbs: ["list", "watch"]
- apiGroups: ["lowbit.dev"]
  resources: ["quantizedmodels/status", "finetunejobs/status", "inferenceendpoints/status"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments/scale"]
  verbs: ["patch"]
# Multi-node vLLM endpoints are LeaderWorkerSets (kubernetes-sigs/lws); harmless where LWS is not installed.
- apiGroups: ["leaderworkerset.x-k8s.io"]
  resources: ["leaderworkersets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}
