namespace Lowbit.LocalCluster.Store;

/// <summary>The built-in resources the embedded server stores and serves.</summary>
public static class BuiltinResources
{
    private static readonly ScaleSubresource ReplicasScale = new(".spec.replicas", ".status.replicas", ".status.selector");

    public static readonly ResourceType Namespaces = Core("namespaces", "Namespace", "namespace", namespaced: false, status: true, shortNames: ["ns"]);
    public static readonly ResourceType Pods = Core("pods", "Pod", "pod", status: true, shortNames: ["po"], categories: ["all"]);
    public static readonly ResourceType Services = Core("services", "Service", "service", status: true, shortNames: ["svc"], categories: ["all"]);
    public static readonly ResourceType Endpoints = Core("endpoints", "Endpoints", "endpoints", shortNames: ["ep"]);
    public static readonly ResourceType ConfigMaps = Core("configmaps", "ConfigMap", "configmap", shortNames: ["cm"]);
    public static readonly ResourceType Secrets = Core("secrets", "Secret", "secret");
    public static readonly ResourceType Events = Core("events", "Event", "event", shortNames: ["ev"]);
    public static readonly ResourceType ServiceAccounts = Core("serviceaccounts", "ServiceAccount", "serviceaccount", shortNames: ["sa"]);
    public static readonly ResourceType PersistentVolumeClaims = Core("persistentvolumeclaims", "PersistentVolumeClaim", "persistentvolumeclaim", status: true, shortNames: ["pvc"]);
    public static readonly ResourceType ResourceQuotas = Core("resourcequotas", "ResourceQuota", "resourcequota", status: true, shortNames: ["quota"]);
    public static readonly ResourceType PersistentVolumes = Core("persistentvolumes", "PersistentVolume", "persistentvolume", namespaced: false, status: true, shortNames: ["pv"]);
    public static readonly ResourceType Nodes = Core("nodes", "Node", "node", namespaced: false, status: true, shortNames: ["no"]);
    public static readonly ResourceType Deployments = Of("apps", "v1", "deployments", "Deployment", "deployment", status: true, scale: ReplicasScale, shortNames: ["deploy"], categories: ["all"]);
    public static readonly ResourceType ReplicaSets = Of("apps", "v1", "replicasets", "ReplicaSet", "replicaset", status: true, scale: ReplicasScale, shortNames: ["rs"], categories: ["all"]);
    public static readonly ResourceType StatefulSets = Of("apps", "v1", "statefulsets", "StatefulSet", "statefulset", status: true, scale: ReplicasScale, shortNames: ["sts"], categories: ["all"]);
    public static readonly ResourceType DaemonSets = Of("apps", "v1", "daemonsets", "DaemonSet", "daemonset", status: true, shortNames: ["ds"], categories: ["all"]);
    public static readonly ResourceType Jobs = Of("batch", "v1", "jobs", "Job", "job", status: true, categories: ["all"]);
    public static readonly ResourceType CronJobs = Of("batch", "v1", "cronjobs", "CronJob", "cronjob", status: true, shortNames: ["cj"], categories: ["all"]);
    public static readonly ResourceType Leases = Of("coordination.k8s.io", "v1", "leases", "Lease", "lease");
    public static readonly ResourceType EventsV1 = Of("events.k8s.io", "v1", "events", "Event", "event", shortNames: ["ev"]);
    public static readonly ResourceType EndpointSlices = Of("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", "endpointslice");
    public static readonly ResourceType CustomResourceDefinitions = Of("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", "customresourcedefinition", namespaced: false, status: true, shortNames: ["crd", "crds"]);
    public static readonly ResourceType Roles = Of("rbac.authorization.k8s.io", "v1", "roles", "Role", "role");
    public static readonly ResourceType RoleBindings = Of("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", "rolebinding");
    public static readonly ResourceType ClusterRoles = Of("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", "clusterrole", namespaced: false);
    public static readonly ResourceType ClusterRoleBindings = Of("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", "clusterrolebinding", namespaced: false);
    public static readonly ResourceType HorizontalPodAutoscalers = Of("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", "horizontalpodautoscaler", status: true, shortNames: ["hpa"], categories: ["all"]);
    public static readonly ResourceType PodDisruptionBudgets = Of("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", "poddisruptionbudget", status: true, shortNames: ["pdb"]);
    public static readonly ResourceType NetworkPolicies = Of("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", "networkpolicy", shortNames: ["netpol"]);
    public static readonly ResourceType PriorityClasses = Of("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", "priorityclass", namespaced: false, shortNames: ["pc"]);
    /// <summary>Create-only and never stored: answered by <see cref="Auth.AccessReviews"/>.</summary>
    public static readonly ResourceType TokenReviews = Of("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", "tokenreview", namespaced: false);
    public static readonly ResourceType SubjectAccessReviews = Of("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", "subjectaccessreview", namespaced: false);
    public static readonly ResourceType StorageClasses = Of("storage.k8s.io", "v1", "storageclasses", "StorageClass", "storageclass", namespaced: false, shortNames: ["sc"]);

    public static IReadOnlyList<ResourceType> All { get; } =
    [
        Namespaces, Pods, Services, Endpoints, ConfigMaps, Secrets, Events, ServiceAccounts, PersistentVolumeClaims,
        ResourceQuotas, PersistentVolumes, Nodes, Deployments, ReplicaSets, StatefulSets, DaemonSets, Jobs, CronJobs, Leases, EventsV1,
        EndpointSlices, CustomResourceDefinitions, Roles, RoleBindings, ClusterRoles, ClusterRoleBindings,
        HorizontalPodAutoscalers, PodDisruptionBudgets, NetworkPolicies, PriorityClasses, StorageClasses, TokenReviews, SubjectAccessReviews,
    ];

    /// <summary>Resources that only answer <c>create</c> (reviews) and are never stored.</summary>
    public static bool IsReview(ResourceType type) => type == TokenReviews || type == SubjectAccessReviews;

    /// <summary>The namespaces that exist when a fresh server starts.</summary>
    public static IReadOnlyList<string> InitialNamespaces { get; } = ["default", "kube-system", "kube-public", "kube-node-lease"];

    private static ResourceType Core(string plural, string kind, string singular, bool namespaced = true, bool status = false,
        string[]? shortNames = null, string[]? categories = null) =>
        Of("", "v1", plural, kind, singular, namespaced, status, null, shortNames, categories);

    private static ResourceType Of(string group, string version, string plural, string kind, string singular, bool namespaced = true,
        bool status = false, ScaleSubresource? scale = null, string[]? shortNames = null, string[]? categories = null) =>
        new()
        {
            Group = group,
            Version = version,
            Plural = plural,
            Kind = kind,
            Singular = singular,
            Namespaced = namespaced,
            HasStatus = status,
            Scale = scale,
            ShortNames = shortNames ?? [],
            Categories = categories ?? [],
            StorageVersion = version,
        };
}
