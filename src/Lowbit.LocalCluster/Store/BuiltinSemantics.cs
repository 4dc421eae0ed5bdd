using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// The defaulting and validation of built-in kinds that clients notice: names, pod containers, service
/// cluster IPs and ports, deployment and job selectors. A subset of kube-apiserver's registry strategies.
/// </summary>
internal static partial class BuiltinSemantics
{
    private static int _nextClusterIp = 10;

    public static void Default(ResourceType type, JsonObject obj, string uid)
    {
        if (type.IsCustom)
        {
            return;
        }
        var spec = obj["spec"] as JsonObject;
        switch (type.Kind)
        {
            case "Namespace" when type.Group.Length == 0:
                obj["spec"] ??= new JsonObject { ["finalizers"] = new JsonArray("kubernetes") };
                obj["status"] ??= new JsonObject { ["phase"] = "Active" };
                var labels = Labels(obj);
                labels["kubernetes.io/metadata.name"] = (string?)obj["metadata"]!["name"];
                break;
            case "Pod":
                if (spec is not null)
                {
                    DefaultPodSpec(spec);
                }
                obj["status"] ??= new JsonObject { ["phase"] = "Pending" };
                break;
            case "Service" when spec is not null:
                spec["type"] ??= "ClusterIP";
                spec["sessionAffinity"] ??= "None";
                if ((string?)spec["clusterIP"] is null or "")
                {
                    var n = Interlocked.Increment(ref _nextClusterIp);
                    spec["clusterIP"] = $"10.96.{n / 250}.{n % 250 + 1}";
                    spec["clusterIPs"] = new JsonArray((string?)spec["clusterIP"]);
                }
                foreach (var port in (spec["ports"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    port["protocol"] ??= "TCP";
                    port["targetPort"] ??= port["port"]?.DeepClone();
                }
                obj["status"] ??= new JsonObject { ["loadBalancer"] = new JsonObject() };
                break;
            case "Deployment" when spec is not null:
                spec["replicas"] ??= 1;
                spec["revisionHistoryLimit"] ??= 10;
                spec["progressDeadlineSeconds"] ??= 600;
                spec["strategy"] ??= new JsonObject
                {
                    ["type"] = "RollingUpdate",
                    ["rollingUpdate"] = new JsonObject { ["maxSurge"] = "25%", ["maxUnavailable"] = "25%" },
                };
                DefaultTemplate(spec);
                break;
            case "ReplicaSet" or "StatefulSet" when spec is not null:
                spec["replicas"] ??= 1;
                DefaultTemplate(spec);
                break;
            case "Job" when spec is not null:
                spec["parallelism"] ??= 1;
                spec["completions"] ??= 1;
                spec["backoffLimit"] ??= 6;
                spec["completionMode"] ??= "NonIndexed";
                spec["suspend"] ??= false;
                spec["podReplacementPolicy"] ??= "TerminatingOrFailed";
                if ((bool?)spec["manualSelector"] != true && spec["selector"] is null)
                {
                    spec["selector"] = new JsonObject { ["matchLabels"] = new JsonObject { ["batch.kubernetes.io/controller-uid"] = uid } };
                    var templateMeta = (spec["template"] as JsonObject)?["metadata"] as JsonObject;
                    if (spec["template"] is JsonObject template)
                    {
                        templateMeta ??= new JsonObject();
                        template["metadata"] = templateMeta;
                        var tl = templateMeta["labels"] as JsonObject ?? new JsonObject();
                        templateMeta["labels"] = tl;
                        var jobName = (string?)obj["metadata"]!["name"];
                        tl["batch.kubernetes.io/controller-uid"] ??= uid;
                        tl["batch.kubernetes.io/job-name"] ??= jobName;
                        tl["controller-uid"] ??= uid;
                        tl["job-name"] ??= jobName;
                    }
                }
                DefaultTemplate(spec);
                break;
            case "Secret":
                obj["type"] ??= "Opaque";
                break;
        }
    }

    public static IEnumerable<StatusCause> Validate(ResourceType type, JsonObject obj)
    {
        var meta = obj["metadata"] as JsonObject;
        var name = (string?)meta?["name"] ?? "";
        var dnsLabel = type.Kind is "Namespace" or "Service" && !type.IsCustom;
        if (dnsLabel ? !DnsLabel().IsMatch(name) || name.Length > 63 : !DnsSubdomain().IsMatch(name) || name.Length > 253)
        {
            if (!(type == BuiltinResources.Events || type == BuiltinResources.EventsV1 || type.Kind.EndsWith("Role", StringComparison.Ordinal)
                || type.Kind.EndsWith("Binding", StringComparison.Ordinal)))
            {
                yield return new StatusCause("FieldValueInvalid",
                    $"Invalid value: \"{name}\": a lowercase RFC 1123 {(dnsLabel ? "label" : "subdomain")} must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                    "metadata.name");
            }
        }
        if (type.IsCustom)
        {
            yield break;
        }
        var spec = obj["spec"] as JsonObject;
        switch (type.Kind)
        {
            case "Pod":
                foreach (var cause in ValidatePodSpec(spec, "spec"))
                {
                    yield return cause;
                }
                break;
            case "Deployment" or "ReplicaSet" or "Job" or "StatefulSet" or "DaemonSet":
                if (type.Kind != "Job" && spec?["selector"] is null)
                {
                    yield return new StatusCause("FieldValueRequired", "Required value", "spec.selector");
                }
                foreach (var cause in ValidatePodSpec(spec?["template"]?["spec"] as JsonObject, "spec.template.spec"))
                {
                    yield return cause;
                }
                if (spec?["selector"]?["matchLabels"] is JsonObject matchLabels && spec["template"]?["metadata"]?["labels"] is var tl)
                {
                    foreach (var (k, v) in matchLabels)
                    {
                        if ((string?)tl?[k] != (string?)v)
                        {
                            yield return new StatusCause("FieldValueInvalid", "Invalid value: selector does not match template labels", "spec.template.metadata.labels");
                            break;
                        }
                    }
                }
                break;
            case "Service":
                foreach (var (port, i) in (spec?["ports"] as JsonArray ?? []).Select((p, i) => (p, i)))
                {
                    if (port?["port"] is null)
                    {
                        yield return new StatusCause("FieldValueRequired", "Required value", $"spec.ports[{i}].port");
                    }
                }
                break;
        }
    }

    private static IEnumerable<StatusCause> ValidatePodSpec(JsonObject? spec, string path)
    {
        if (spec?["containers"] is not JsonArray { Count: > 0 } containers)
        {
            yield return new StatusCause("FieldValueRequired", "Required value", $"{path}.containers");
            yield break;
        }
        for (var i = 0; i < containers.Count; i++)
        {
            if (string.IsNullOrEmpty((string?)containers[i]?["name"]))
            {
                yield return new StatusCause("FieldValueRequired", "Required value", $"{path}.containers[{i}].name");
            }
            if (string.IsNullOrEmpty((string?)containers[i]?["image"]))
            {
                yield return new StatusCause("FieldValueRequired", "Required value", $"{path}.containers[{i}].image");
            }
        }
    }

    private static void DefaultTemplate(JsonObject spec)
    {
        if (spec["template"]?["spec"] is JsonObject podSpec)
        {
            DefaultPodSpec(podSpec);
        }
    }

    private static void DefaultPodSpec(JsonObject spec)
    {
        spec["restartPolicy"] ??= "Always";
        spec["terminationGracePeriodSeconds"] ??= 30;
        spec["dnsPolicy"] ??= "ClusterFirst";
        spec["schedulerName"] ??= "default-scheduler";
        spec["securityContext"] ??= new JsonObject();
        foreach (var list in new[] { "containers", "initContainers" })
        {
            foreach (var container in (spec[list] as JsonArray ?? []).OfType<JsonObject>())
            {
                container["terminationMessagePath"] ??= "/dev/termination-log";
                container["terminationMessagePolicy"] ??= "File";
                container["imagePullPolicy"] ??= ((string?)container["image"])?.EndsWith(":latest", StringComparison.Ordinal) == true ? "Always" : "IfNotPresent";
                container["resources"] ??= new JsonObject();
                foreach (var port in (container["ports"] as JsonArray ?? []).OfType<JsonObject>())
                {
                    port["protocol"] ??= "TCP";
                }
            }
        }
    }

    private static JsonObject Labels(JsonObject obj)
    {
        var meta = obj["metadata"]!.AsObject();
        if (meta["labels"] is not JsonObject labels)
        {
            labels = new JsonObject();
            meta["labels"] = labels;
        }
        return labels;
    }

    [GeneratedRegex("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    private static partial Regex DnsLabel();

    [GeneratedRegex(@"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")]
    private static partial Regex DnsSubdomain();
}
