using System.Collections.Frozen;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// The protobuf schemas of the built-in kinds that <c>kubectl create</c> sends as protobuf (its typed clients do), with
/// the field numbers of Kubernetes' generated.proto files (k8s.io/api core, apps, batch, rbac, policy, scheduling v1,
/// autoscaling v2 and apimachinery meta/v1, intstr, resource). Only what those commands and common pod templates carry is listed; any other
/// field number is skipped when decoding. Status messages are left out on purpose: a create ignores status.
/// </summary>
internal static class KubernetesProtoSchemas
{
    private const bool Ptr = true;

    public static ProtoSchemaSet Default { get; } = new(Messages(), Roots());

    private static IReadOnlyList<(string ApiVersion, string Kind)> Roots() =>
    [
        ("*", "DeleteOptions"),
        ("v1", "Namespace"), ("v1", "ConfigMap"), ("v1", "Secret"), ("v1", "ServiceAccount"), ("v1", "Service"),
        ("v1", "ResourceQuota"), ("v1", "Pod"),
        ("apps/v1", "Deployment"), ("apps/v1", "ReplicaSet"),
        ("batch/v1", "Job"), ("batch/v1", "CronJob"),
        ("rbac.authorization.k8s.io/v1", "Role"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("autoscaling/v2", "HorizontalPodAutoscaler"),
        ("policy/v1", "PodDisruptionBudget"),
        ("scheduling.k8s.io/v1", "PriorityClass"),
    ];

    private static IEnumerable<ProtoMessage> Messages() =>
    [
        // apimachinery pkg/apis/meta/v1
        M("ObjectMeta", Str(1, "name"), Str(2, "generateName"), Str(3, "namespace"), Str(5, "uid"), Str(6, "resourceVersion"),
            I64(7, "generation"), Time(8, "creationTimestamp"), Time(9, "deletionTimestamp"), I64(10, "deletionGracePeriodSeconds", Ptr),
            StrMap(11, "labels"), StrMap(12, "annotations"), Objs(13, "ownerReferences", "OwnerReference"), Strs(14, "finalizers")),
        M("OwnerReference", Str(5, "apiVersion"), Str(1, "kind"), Str(3, "name"), Str(4, "uid"), Bool(6, "controller", Ptr),
            Bool(7, "blockOwnerDeletion", Ptr)),
        M("LabelSelector", StrMap(1, "matchLabels"), Objs(2, "matchExpressions", "LabelSelectorRequirement")),
        M("LabelSelectorRequirement", Str(1, "key"), Str(2, "operator"), Strs(3, "values")),
        M("DeleteOptions", I64(1, "gracePeriodSeconds", Ptr), Obj(2, "preconditions", "Preconditions", Ptr), Bool(3, "orphanDependents", Ptr),
            Str(4, "propagationPolicy", Ptr), Strs(5, "dryRun")),
        M("Preconditions", Str(1, "uid", Ptr), Str(2, "resourceVersion", Ptr)),

        // core/v1: the kinds kubectl create makes
        Top("Namespace", Obj(2, "spec", "NamespaceSpec")),
        M("NamespaceSpec", Strs(1, "finalizers")),
        Top("ConfigMap", Bool(4, "immutable", Ptr), StrMap(2, "data"), BytesMap(3, "binaryData")),
        Top("Secret", Bool(5, "immutable", Ptr), BytesMap(2, "data"), StrMap(4, "stringData"), Str(3, "type")),
        Top("ServiceAccount", Objs(2, "secrets", "ObjectReference"), Objs(3, "imagePullSecrets", "LocalObjectReference"),
            Bool(4, "automountServiceAccountToken", Ptr)),
        M("ObjectReference", Str(1, "kind"), Str(2, "namespace"), Str(3, "name"), Str(4, "uid"), Str(5, "apiVersion"),
            Str(6, "resourceVersion"), Str(7, "fieldPath")),
        M("LocalObjectReference", Str(1, "name")),
        Top("Service", Obj(2, "spec", "ServiceSpec")),
        M("ServiceSpec", Objs(1, "ports", "ServicePort"), StrMap(2, "selector"), Str(3, "clusterIP"), Strs(18, "clusterIPs"), Str(4, "type"),
            Strs(5, "externalIPs"), Str(7, "sessionAffinity"), Str(8, "loadBalancerIP"), Strs(9, "loadBalancerSourceRanges"),
            Str(10, "externalName"), Str(11, "externalTrafficPolicy"), I32(12, "healthCheckNodePort"), Bool(13, "publishNotReadyAddresses"),
            Strs(19, "ipFamilies"), Str(17, "ipFamilyPolicy", Ptr), Bool(20, "allocateLoadBalancerNodePorts", Ptr),
            Str(21, "loadBalancerClass", Ptr), Str(22, "internalTrafficPolicy", Ptr)),
        M("ServicePort", Str(1, "name"), Str(2, "protocol"), Str(6, "appProtocol", Ptr), I32(3, "port"), IntStr(4, "targetPort"), I32(5, "nodePort")),
        Top("ResourceQuota", Obj(2, "spec", "ResourceQuotaSpec")),
        M("ResourceQuotaSpec", QtyMap(1, "hard"), Strs(2, "scopes"), Obj(3, "scopeSelector", "ScopeSelector", Ptr)),
        M("ScopeSelector", Objs(1, "matchExpressions", "ScopedResourceSelectorRequirement")),
        M("ScopedResourceSelectorRequirement", Str(1, "scopeName"), Str(2, "operator"), Strs(3, "values")),

        // core/v1: pods and what pod templates carry
        Top("Pod", Obj(2, "spec", "PodSpec")),
        M("PodTemplateSpec", Obj(1, "metadata", "ObjectMeta"), Obj(2, "spec", "PodSpec")),
        M("PodSpec", Objs(1, "volumes", "Volume"), Objs(20, "initContainers", "Container"), Objs(2, "containers", "Container"),
            Str(3, "restartPolicy"), I64(4, "terminationGracePeriodSeconds", Ptr), I64(5, "activeDeadlineSeconds", Ptr), Str(6, "dnsPolicy"),
            StrMap(7, "nodeSelector"), Str(8, "serviceAccountName"), Str(9, "serviceAccount"), Bool(21, "automountServiceAccountToken", Ptr),
            Str(10, "nodeName"), Bool(11, "hostNetwork"), Bool(12, "hostPID"), Bool(13, "hostIPC"), Bool(27, "shareProcessNamespace", Ptr),
            Obj(14, "securityContext", "PodSecurityContext", Ptr), Objs(15, "imagePullSecrets", "LocalObjectReference"), Str(16, "hostname"),
            Str(17, "subdomain"), Str(19, "schedulerName"), Objs(22, "tolerations", "Toleration"), Str(24, "priorityClassName"),
            I32(25, "priority", Ptr), Str(29, "runtimeClassName", Ptr), Bool(30, "enableServiceLinks", Ptr), Str(31, "preemptionPolicy", Ptr),
            Bool(35, "setHostnameAsFQDN", Ptr)),
        M("PodSecurityContext", I64(2, "runAsUser", Ptr), I64(6, "runAsGroup", Ptr), Bool(3, "runAsNonRoot", Ptr), I64s(4, "supplementalGroups"),
            I64(5, "fsGroup", Ptr), Objs(7, "sysctls", "Sysctl"), Str(9, "fsGroupChangePolicy", Ptr), Obj(10, "seccompProfile", "SeccompProfile", Ptr)),
        M("Sysctl", Str(1, "name"), Str(2, "value")),
        M("SeccompProfile", Str(1, "type"), Str(2, "localhostProfile", Ptr)),
        M("Toleration", Str(1, "key"), Str(2, "operator"), Str(3, "value"), Str(4, "effect"), I64(5, "tolerationSeconds", Ptr)),
        M("Container", Str(1, "name"), Str(2, "image"), Strs(3, "command"), Strs(4, "args"), Str(5, "workingDir"),
            Objs(6, "ports", "ContainerPort"), Objs(19, "envFrom", "EnvFromSource"), Objs(7, "env", "EnvVar"),
            Obj(8, "resources", "ResourceRequirements"), Objs(9, "volumeMounts", "VolumeMount"), Obj(10, "livenessProbe", "Probe", Ptr),
            Obj(11, "readinessProbe", "Probe", Ptr), Obj(22, "startupProbe", "Probe", Ptr), Str(13, "terminationMessagePath"),
            Str(20, "terminationMessagePolicy"), Str(14, "imagePullPolicy"), Obj(15, "securityContext", "SecurityContext", Ptr),
            Bool(16, "stdin"), Bool(17, "stdinOnce"), Bool(18, "tty")),
        M("ContainerPort", Str(1, "name"), I32(2, "hostPort"), I32(3, "containerPort"), Str(4, "protocol"), Str(5, "hostIP")),
        M("EnvVar", Str(1, "name"), Str(2, "value"), Obj(3, "valueFrom", "EnvVarSource", Ptr)),
        M("EnvVarSource", Obj(1, "fieldRef", "ObjectFieldSelector", Ptr), Obj(2, "resourceFieldRef", "ResourceFieldSelector", Ptr),
            Obj(3, "configMapKeyRef", "ConfigMapKeySelector", Ptr), Obj(4, "secretKeyRef", "SecretKeySelector", Ptr)),
        M("ObjectFieldSelector", Str(1, "apiVersion"), Str(2, "fieldPath")),
        M("ResourceFieldSelector", Str(1, "containerName"), Str(2, "resource"), Qty(3, "divisor")),
        M("ConfigMapKeySelector", Inline(1, "LocalObjectReference"), Str(2, "key"), Bool(3, "optional", Ptr)),
        M("SecretKeySelector", Inline(1, "LocalObjectReference"), Str(2, "key"), Bool(3, "optional", Ptr)),
        M("EnvFromSource", Str(1, "prefix"), Obj(2, "configMapRef", "ConfigMapEnvSource", Ptr), Obj(3, "secretRef", "SecretEnvSource", Ptr)),
        M("ConfigMapEnvSource", Inline(1, "LocalObjectReference"), Bool(2, "optional", Ptr)),
        M("SecretEnvSource", Inline(1, "LocalObjectReference"), Bool(2, "optional", Ptr)),
        M("ResourceRequirements", QtyMap(1, "limits"), QtyMap(2, "requests")),
        M("VolumeMount", Str(1, "name"), Bool(2, "readOnly"), Str(3, "mountPath"), Str(4, "subPath"), Str(5, "mountPropagation", Ptr),
            Str(6, "subPathExpr")),
        M("Probe", Inline(1, "ProbeHandler"), I32(2, "initialDelaySeconds"), I32(3, "timeoutSeconds"), I32(4, "periodSeconds"),
            I32(5, "successThreshold"), I32(6, "failureThreshold"), I64(7, "terminationGracePeriodSeconds", Ptr)),
        M("ProbeHandler", Obj(1, "exec", "ExecAction", Ptr), Obj(2, "httpGet", "HTTPGetAction", Ptr), Obj(3, "tcpSocket", "TCPSocketAction", Ptr)),
        M("ExecAction", Strs(1, "command")),
        M("HTTPGetAction", Str(1, "path"), IntStr(2, "port"), Str(3, "host"), Str(4, "scheme"), Objs(5, "httpHeaders", "HTTPHeader")),
        M("HTTPHeader", Str(1, "name"), Str(2, "value")),
        M("TCPSocketAction", IntStr(1, "port"), Str(2, "host")),
        M("SecurityContext", Obj(1, "capabilities", "Capabilities", Ptr), Bool(2, "privileged", Ptr), I64(4, "runAsUser", Ptr),
            I64(8, "runAsGroup", Ptr), Bool(5, "runAsNonRoot", Ptr), Bool(6, "readOnlyRootFilesystem", Ptr),
            Bool(7, "allowPrivilegeEscalation", Ptr), Str(9, "procMount", Ptr), Obj(11, "seccompProfile", "SeccompProfile", Ptr)),
        M("Capabilities", Strs(1, "add"), Strs(2, "drop")),
        M("Volume", Str(1, "name"), Inline(2, "VolumeSource")),
        M("VolumeSource", Obj(1, "hostPath", "HostPathVolumeSource", Ptr), Obj(2, "emptyDir", "EmptyDirVolumeSource", Ptr),
            Obj(6, "secret", "SecretVolumeSource", Ptr), Obj(10, "persistentVolumeClaim", "PersistentVolumeClaimVolumeSource", Ptr),
            Obj(16, "downwardAPI", "DownwardAPIVolumeSource", Ptr), Obj(19, "configMap", "ConfigMapVolumeSource", Ptr)),
        M("HostPathVolumeSource", Str(1, "path"), Str(2, "type", Ptr)),
        M("EmptyDirVolumeSource", Str(1, "medium"), Qty(2, "sizeLimit", Ptr)),
        M("SecretVolumeSource", Str(1, "secretName"), Objs(2, "items", "KeyToPath"), I32(3, "defaultMode", Ptr), Bool(4, "optional", Ptr)),
        M("ConfigMapVolumeSource", Inline(1, "LocalObjectReference"), Objs(2, "items", "KeyToPath"), I32(3, "defaultMode", Ptr),
            Bool(4, "optional", Ptr)),
        M("PersistentVolumeClaimVolumeSource", Str(1, "claimName"), Bool(2, "readOnly")),
        M("DownwardAPIVolumeSource", Objs(1, "items", "DownwardAPIVolumeFile"), I32(2, "defaultMode", Ptr)),
        M("DownwardAPIVolumeFile", Str(1, "path"), Obj(2, "fieldRef", "ObjectFieldSelector", Ptr),
            Obj(3, "resourceFieldRef", "ResourceFieldSelector", Ptr), I32(4, "mode", Ptr)),
        M("KeyToPath", Str(1, "key"), Str(2, "path"), I32(3, "mode", Ptr)),

        // apps/v1
        Top("Deployment", Obj(2, "spec", "DeploymentSpec")),
        M("DeploymentSpec", I32(1, "replicas", Ptr), Obj(2, "selector", "LabelSelector", Ptr), Obj(3, "template", "PodTemplateSpec"),
            Obj(4, "strategy", "DeploymentStrategy"), I32(5, "minReadySeconds"), I32(6, "revisionHistoryLimit", Ptr), Bool(7, "paused"),
            I32(9, "progressDeadlineSeconds", Ptr)),
        M("DeploymentStrategy", Str(1, "type"), Obj(2, "rollingUpdate", "RollingUpdateDeployment", Ptr)),
        M("RollingUpdateDeployment", IntStr(1, "maxUnavailable", Ptr), IntStr(2, "maxSurge", Ptr)),
        Top("ReplicaSet", Obj(2, "spec", "ReplicaSetSpec")),
        M("ReplicaSetSpec", I32(1, "replicas", Ptr), I32(4, "minReadySeconds"), Obj(2, "selector", "LabelSelector", Ptr),
            Obj(3, "template", "PodTemplateSpec")),

        // batch/v1
        Top("Job", Obj(2, "spec", "JobSpec")),
        M("JobSpec", I32(1, "parallelism", Ptr), I32(2, "completions", Ptr), I64(3, "activeDeadlineSeconds", Ptr), I32(7, "backoffLimit", Ptr),
            I32(12, "backoffLimitPerIndex", Ptr), I32(13, "maxFailedIndexes", Ptr), Obj(4, "selector", "LabelSelector", Ptr),
            Bool(5, "manualSelector", Ptr), Obj(6, "template", "PodTemplateSpec"), I32(8, "ttlSecondsAfterFinished", Ptr),
            Str(9, "completionMode", Ptr), Bool(10, "suspend", Ptr), Str(14, "podReplacementPolicy", Ptr), Str(15, "managedBy", Ptr)),
        Top("CronJob", Obj(2, "spec", "CronJobSpec")),
        M("CronJobSpec", Str(1, "schedule"), Str(8, "timeZone", Ptr), I64(2, "startingDeadlineSeconds", Ptr), Str(3, "concurrencyPolicy"),
            Bool(4, "suspend", Ptr), Obj(5, "jobTemplate", "JobTemplateSpec"), I32(6, "successfulJobsHistoryLimit", Ptr),
            I32(7, "failedJobsHistoryLimit", Ptr)),
        M("JobTemplateSpec", Obj(1, "metadata", "ObjectMeta"), Obj(2, "spec", "JobSpec")),

        // rbac.authorization.k8s.io/v1
        Top("Role", Objs(2, "rules", "PolicyRule")),
        Top("ClusterRole", Objs(2, "rules", "PolicyRule"), Obj(3, "aggregationRule", "AggregationRule", Ptr)),
        M("AggregationRule", Objs(1, "clusterRoleSelectors", "LabelSelector")),
        Top("RoleBinding", Objs(2, "subjects", "Subject"), Obj(3, "roleRef", "RoleRef")),
        Top("ClusterRoleBinding", Objs(2, "subjects", "Subject"), Obj(3, "roleRef", "RoleRef")),
        M("PolicyRule", Strs(1, "verbs"), Strs(2, "apiGroups"), Strs(3, "resources"), Strs(4, "resourceNames"), Strs(5, "nonResourceURLs")),
        M("Subject", Str(1, "kind"), Str(2, "apiGroup"), Str(3, "name"), Str(4, "namespace")),
        M("RoleRef", Str(1, "apiGroup"), Str(2, "kind"), Str(3, "name")),

        // autoscaling/v2 (kubectl autoscale)
        Top("HorizontalPodAutoscaler", Obj(2, "spec", "HorizontalPodAutoscalerSpec")),
        M("HorizontalPodAutoscalerSpec", Obj(1, "scaleTargetRef", "CrossVersionObjectReference"), I32(2, "minReplicas", Ptr),
            I32(3, "maxReplicas"), Objs(4, "metrics", "MetricSpec"), Obj(5, "behavior", "HorizontalPodAutoscalerBehavior", Ptr)),
        M("CrossVersionObjectReference", Str(1, "kind"), Str(2, "name"), Str(3, "apiVersion")),
        M("MetricSpec", Str(1, "type"), Obj(2, "object", "ObjectMetricSource", Ptr), Obj(3, "pods", "PodsMetricSource", Ptr),
            Obj(4, "resource", "ResourceMetricSource", Ptr), Obj(7, "containerResource", "ContainerResourceMetricSource", Ptr),
            Obj(5, "external", "ExternalMetricSource", Ptr)),
        M("ResourceMetricSource", Str(1, "name"), Obj(2, "target", "MetricTarget")),
        M("ContainerResourceMetricSource", Str(1, "name"), Obj(2, "target", "MetricTarget"), Str(3, "container")),
        M("PodsMetricSource", Obj(1, "metric", "MetricIdentifier"), Obj(2, "target", "MetricTarget")),
        M("ObjectMetricSource", Obj(1, "describedObject", "CrossVersionObjectReference"), Obj(2, "target", "MetricTarget"),
            Obj(3, "metric", "MetricIdentifier")),
        M("ExternalMetricSource", Obj(1, "metric", "MetricIdentifier"), Obj(2, "target", "MetricTarget")),
        M("MetricIdentifier", Str(1, "name"), Obj(2, "selector", "LabelSelector", Ptr)),
        M("MetricTarget", Str(1, "type"), Qty(2, "value", Ptr), Qty(3, "averageValue", Ptr), I32(4, "averageUtilization", Ptr)),
        M("HorizontalPodAutoscalerBehavior", Obj(1, "scaleUp", "HPAScalingRules", Ptr), Obj(2, "scaleDown", "HPAScalingRules", Ptr)),
        M("HPAScalingRules", I32(3, "stabilizationWindowSeconds", Ptr), Str(1, "selectPolicy", Ptr), Objs(2, "policies", "HPAScalingPolicy"),
            Qty(4, "tolerance", Ptr)),
        M("HPAScalingPolicy", Str(1, "type"), I32(2, "value"), I32(3, "periodSeconds")),

        // policy/v1 and scheduling.k8s.io/v1
        Top("PodDisruptionBudget", Obj(2, "spec", "PodDisruptionBudgetSpec")),
        M("PodDisruptionBudgetSpec", IntStr(1, "minAvailable", Ptr), Obj(2, "selector", "LabelSelector", Ptr), IntStr(3, "maxUnavailable", Ptr)),
        Top("PriorityClass", I32(2, "value", Ptr), Bool(3, "globalDefault"), Str(4, "description"), Str(5, "preemptionPolicy", Ptr)),
    ];

    /// <summary>A top-level kind: ObjectMeta in field 1, then its own fields.</summary>
    private static ProtoMessage Top(string kind, params ProtoField[] fields) => M(kind, [Obj(1, "metadata", "ObjectMeta"), .. fields]);

    private static ProtoMessage M(string name, params ProtoField[] fields) => new(name, fields.ToFrozenDictionary(f => f.Number));

    private static ProtoField Str(int number, string name, bool pointer = false) => new(number, name, ProtoKind.String, Pointer: pointer);

    private static ProtoField Strs(int number, string name) => new(number, name, ProtoKind.String, ProtoShape.Repeated);

    private static ProtoField StrMap(int number, string name) => new(number, name, ProtoKind.String, ProtoShape.Map);

    private static ProtoField BytesMap(int number, string name) => new(number, name, ProtoKind.Bytes, ProtoShape.Map);

    private static ProtoField QtyMap(int number, string name) => new(number, name, ProtoKind.Quantity, ProtoShape.Map);

    private static ProtoField I32(int number, string name, bool pointer = false) => new(number, name, ProtoKind.Int32, Pointer: pointer);

    private static ProtoField I64(int number, string name, bool pointer = false) => new(number, name, ProtoKind.Int64, Pointer: pointer);

    private static ProtoField I64s(int number, string name) => new(number, name, ProtoKind.Int64, ProtoShape.Repeated);

    private static ProtoField Bool(int number, string name, bool pointer = false) => new(number, name, ProtoKind.Bool, Pointer: pointer);

    private static ProtoField IntStr(int number, string name, bool pointer = false) => new(number, name, ProtoKind.IntOrString, Pointer: pointer);

    private static ProtoField Qty(int number, string name, bool pointer = false) => new(number, name, ProtoKind.Quantity, Pointer: pointer);

    private static ProtoField Time(int number, string name) => new(number, name, ProtoKind.Time);

    private static ProtoField Obj(int number, string name, string type, bool pointer = false) =>
        new(number, name, ProtoKind.Message, MessageType: type, Pointer: pointer);

    private static ProtoField Objs(int number, string name, string type) => new(number, name, ProtoKind.Message, ProtoShape.Repeated, type);

    private static ProtoField Inline(int number, string type) => new(number, "", ProtoKind.Inline, MessageType: type);
}
