{{/*
The rules the operator needs in every namespace it manages (least privilege: no wildcards, no
`escalate` or `bind`). The operator creates a Role per cluster for the agents (leases, configmaps,
pods, events); Kubernetes lets it do so only because it holds each of those rights itself.
*/}}
{{- define "pgwarden.operatorRules" -}}
# The custom resource: watch it, add/remove its finalizer, consume the switchover annotation.
- apiGroups: ["pgwarden.io"]
  resources: ["postgresclusters"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["pgwarden.io"]
  resources: ["postgresclusters/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["pgwarden.io"]
  resources: ["postgresclusters/finalizers"]
  verbs: ["update"]
# On-demand backups: queued per cluster, their status follows the primary's report.
- apiGroups: ["pgwarden.io"]
  resources: ["postgresbackups"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["pgwarden.io"]
  resources: ["postgresbackups/status"]
  verbs: ["get", "patch", "update"]
# Children of a cluster, applied server-side and owner-referenced.
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "secrets", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Pods: the label updater sets pgwarden.io/role; rolling changes delete pods (OnDelete strategy).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch", "delete"]
# EndpointSlices: granted to the agents (read-only), which keep PostgreSQL stopped until the
# cluster's -rw Service no longer routes to a member that stopped being primary.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
# Volumes: removed on scale-down and cluster deletion unless spec.storage.retainOnDelete.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "list", "watch", "delete"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# The agents' Role and RoleBinding `<cluster>-agent`.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# The leader key `<cluster>-leader` (and, when all namespaces are watched, the operator's own Lease).
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
{{- end }}

{{/*
Nodes, read-only and cluster-wide in either mode: a cordoned node under a primary makes the
operator switch over before the drain may evict it (the primary's PodDisruptionBudget refuses
until then).
*/}}
{{- define "pgwarden.nodeRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get", "list", "watch"]
{{- end }}
