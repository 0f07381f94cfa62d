{{/*
Names, labels and small shared snippets of the mmop chart.
*/}}

{{- define "mmop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release's full name: <release>-mmop, or the release name alone when it contains "mmop".
*/}}
{{- define "mmop.fullname" -}}
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

{{/*
Cluster-scoped objects (ClusterRole, ClusterRoleBinding) are shared by every namespace, so
their name carries the release namespace: two releases of the same name in two namespaces
(e.g. one namespaced operator per team) must not collide.
*/}}
{{- define "mmop.clusterName" -}}
{{- printf "%s-%s" (include "mmop.fullname" .) .Release.Namespace -}}
{{- end -}}

{{- define "mmop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mmop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mmop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/*
Labels of every object of the chart. Note: never app.kubernetes.io/managed-by: mmop - that
label marks the operator's own children (the PodMonitor selects runtime pods by it); Helm's
objects say managed-by Helm.
*/}}
{{- define "mmop.labels" -}}
helm.sh/chart: {{ include "mmop.chart" . }}
{{ include "mmop.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: mmop
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "mmop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mmop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "mmop.image" -}}
{{- if eq .Values.image.tag "latest" -}}
{{- fail "image.tag: \"latest\" is not allowed: pin a version (empty means the chart's appVersion)" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The operator's API permissions, as RBAC rules. The same list is written down, with the reason
for each, in tests/data/operator-rbac.yaml; tests/unit/chart/test_rbac.py checks that both agree.

"mmop.rbac.clusterRules": cluster-scoped objects, always in a ClusterRole.
"mmop.rbac.namespacedRules": namespaced objects, in the ClusterRole (all namespaces) or in a
Role in watchNamespace.
*/}}
{{- define "mmop.rbac.clusterRules" -}}
# kopf watches CRDs to notice resource kinds (Istio, Gateway API) appearing and going.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# GPU capacity (spec.rollout.capacity): a GPU model's canary is planned around the free GPUs,
# the nodes' allocatable minus the requests of the pods bound there, in every namespace.
- apiGroups: [""]
  resources: ["nodes", "pods"]
  verbs: ["list"]
{{- if .Values.watchNamespace }}
# kopf lists and watches namespaces when it serves named namespaces (not cluster-wide).
- apiGroups: [""]
  resources: ["namespaces"]
  verbs: ["list", "watch"]
{{- end }}
{{- end -}}

{{- define "mmop.rbac.namespacedRules" -}}
# The API: kopf watches MultimodalModels and patches finalizers and its annotations; the
# reconciler reads each model and writes its status (a merge patch of the status subresource).
- apiGroups: ["mmop.io"]
  resources: ["multimodalmodels"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["mmop.io"]
  resources: ["multimodalmodels/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion: true; with the
# OwnerReferencesPermissionEnforcement admission plugin (OpenShift) that needs update on the
# owner's finalizers subresource, or every child is refused.
- apiGroups: ["mmop.io"]
  resources: ["multimodalmodels/finalizers"]
  verbs: ["update"]
# Children the operator owns. Deployments and Services are also watched (kopf event handlers
# wake a model's reconcile loop); the other kinds are listed per model by label. get: after a
# 409 on create, to tell a name taken by another model (NameConflict) from a race.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["networking.istio.io"]
  resources: ["virtualservices", "destinationrules"]
  verbs: ["get", "list", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "list", "create", "patch", "delete"]
# Runtime pods: readiness and IPs for the smoke test and the canary's /metrics.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
# Only get (by name): the golden-set ConfigMap named in spec.rollout.quality.goldenSet.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Events on MultimodalModels (kubectl describe).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{- define "mmop.rbac.secretRules" -}}
# Only get and create (by name, never list or watch): the runtime's bearer token named in
# spec.runtime.authSecretRef, for the canary's test inference, and the per-model smoke-test
# token Secret NAME-mmop-smoke-test the operator creates (owned by the model). Only where
# granted: watchNamespace, rbac.secretNamespaces, or everywhere with rbac.clusterWideSecrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
{{- end -}}
