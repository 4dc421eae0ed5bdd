using System.Text;
using System.Text.RegularExpressions;
using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>A container cannot be created from its configuration (the kubelet's CreateContainerConfigError).</summary>
public sealed class ContainerConfigException(string message) : Exception(message);

/// <summary>
/// Resolves a container's environment like the kubelet: envFrom (secretRef, configMapRef, prefix), then env
/// (value with <c>$(VAR)</c> expansion, valueFrom secretKeyRef, configMapKeyRef, fieldRef). A missing Secret,
/// ConfigMap or key that is not optional throws <see cref="ContainerConfigException"/> with the kubelet's message.
/// </summary>
public static partial class ContainerEnvironment
{
    public static Dictionary<string, string> Resolve(ClusterApi api, V1Pod pod, V1Container container, string podIp = "127.0.0.1")
    {
        var ns = pod.Metadata.NamespaceProperty;
        var env = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var source in container.EnvFrom ?? [])
        {
            var prefix = source.Prefix ?? "";
            if (source.SecretRef is { } secretRef)
            {
                var data = SecretData(api, ns, secretRef.Name, secretRef.Optional == true);
                foreach (var (k, v) in data ?? [])
                {
                    env[prefix + k] = v;
                }
            }
            if (source.ConfigMapRef is { } configMapRef)
            {
                var data = ConfigMapData(api, ns, configMapRef.Name, configMapRef.Optional == true);
                foreach (var (k, v) in data ?? [])
                {
                    env[prefix + k] = v;
                }
            }
        }
        foreach (var variable in container.Env ?? [])
        {
            if (variable.ValueFrom is not { } from)
            {
                env[variable.Name] = Expand(variable.Value ?? "", env);
                continue;
            }
            string? value = null;
            if (from.SecretKeyRef is { } secretKey)
            {
                var data = SecretData(api, ns, secretKey.Name, secretKey.Optional == true);
                if (data is not null && !data.TryGetValue(secretKey.Key, out value) && secretKey.Optional != true)
                {
                    throw new ContainerConfigException($"couldn't find key {secretKey.Key} in Secret {ns}/{secretKey.Name}");
                }
            }
            else if (from.ConfigMapKeyRef is { } configMapKey)
            {
                var data = ConfigMapData(api, ns, configMapKey.Name, configMapKey.Optional == true);
                if (data is not null && !data.TryGetValue(configMapKey.Key, out value) && configMapKey.Optional != true)
                {
                    throw new ContainerConfigException($"couldn't find key {configMapKey.Key} in ConfigMap {ns}/{configMapKey.Name}");
                }
            }
            else if (from.FieldRef is { } fieldRef)
            {
                value = FieldValue(pod, fieldRef.FieldPath, podIp);
            }
            else if (from.ResourceFieldRef is { } resourceRef)
            {
                value = ResourceValue(container, resourceRef);
            }
            if (value is not null)
            {
                env[variable.Name] = value;
            }
        }
        return env;
    }

    /// <summary>Checks that every Secret and ConfigMap the pod's containers and volumes need exists (used by simulated nodes).</summary>
    public static void Check(ClusterApi api, V1Pod pod)
    {
        foreach (var container in (pod.Spec.InitContainers ?? []).Concat(pod.Spec.Containers ?? []))
        {
            Resolve(api, pod, container);
        }
        foreach (var volume in pod.Spec.Volumes ?? [])
        {
            if (volume.Secret is { } secret)
            {
                SecretData(api, pod.Metadata.NamespaceProperty, secret.SecretName, secret.Optional == true);
            }
            if (volume.ConfigMap is { } configMap)
            {
                ConfigMapData(api, pod.Metadata.NamespaceProperty, configMap.Name, configMap.Optional == true);
            }
        }
    }

    /// <summary>Replaces <c>$(NAME)</c> with the variable's value (unknown names stay as written; <c>$$</c> escapes).</summary>
    public static string Expand(string text, IReadOnlyDictionary<string, string> env) =>
        text.Contains('$', StringComparison.Ordinal)
            ? Reference().Replace(text, m => m.Value == "$$" ? "$" : env.TryGetValue(m.Groups[1].Value, out var v) ? v : m.Value)
            : text;

    public static Dictionary<string, string>? SecretData(ClusterApi api, string ns, string name, bool optional)
    {
        var secret = api.TryGet(BuiltinResources.Secrets, ns, name);
        if (secret is null)
        {
            return optional ? null : throw new ContainerConfigException($"secret \"{name}\" not found");
        }
        var model = secret.As<V1Secret>();
        var data = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (k, v) in model.Data ?? new Dictionary<string, byte[]>())
        {
            data[k] = Encoding.UTF8.GetString(v);
        }
        foreach (var (k, v) in model.StringData ?? new Dictionary<string, string>())
        {
            data[k] = v;
        }
        return data;
    }

    public static Dictionary<string, string>? ConfigMapData(ClusterApi api, string ns, string name, bool optional)
    {
        var configMap = api.TryGet(BuiltinResources.ConfigMaps, ns, name);
        if (configMap is null)
        {
            return optional ? null : throw new ContainerConfigException($"configmap \"{name}\" not found");
        }
        return new Dictionary<string, string>(configMap.As<V1ConfigMap>().Data ?? new Dictionary<string, string>(), StringComparer.Ordinal);
    }

    private static string? FieldValue(V1Pod pod, string path, string podIp)
    {
        var labelMatch = IndexedField().Match(path);
        if (labelMatch.Success)
        {
            var map = labelMatch.Groups[1].Value == "labels" ? pod.Metadata.Labels : pod.Metadata.Annotations;
            return map?.TryGetValue(labelMatch.Groups[2].Value, out var v) == true ? v : "";
        }
        return path switch
        {
            "metadata.name" => pod.Metadata.Name,
            "metadata.namespace" => pod.Metadata.NamespaceProperty,
            "metadata.uid" => pod.Metadata.Uid,
            "spec.nodeName" => pod.Spec.NodeName,
            "spec.serviceAccountName" => pod.Spec.ServiceAccountName ?? "default",
            "status.podIP" => podIp,
            "status.hostIP" => "127.0.0.1",
            _ => throw new ContainerConfigException($"unsupported fieldRef fieldPath \"{path}\"; accepted: metadata.name, metadata.namespace, metadata.uid, metadata.labels['k'], metadata.annotations['k'], spec.nodeName, spec.serviceAccountName, status.podIP, status.hostIP"),
        };
    }

    private static string? ResourceValue(V1Container container, V1ResourceFieldSelector selector)
    {
        var (kind, resource) = selector.Resource.StartsWith("limits.", StringComparison.Ordinal)
            ? ("limits", selector.Resource["limits.".Length..])
            : ("requests", selector.Resource["requests.".Length..]);
        var map = kind == "limits" ? container.Resources?.Limits : container.Resources?.Requests;
        if (map is null || !map.TryGetValue(resource, out var quantity))
        {
            return "0";
        }
        var divisor = selector.Divisor?.ToDecimal() ?? 1m;
        return Math.Ceiling(quantity.ToDecimal() / (divisor == 0 ? 1 : divisor)).ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [GeneratedRegex(@"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")]
    private static partial Regex Reference();

    [GeneratedRegex(@"^metadata\.(labels|annotations)\['([^']+)'\]$")]
    private static partial Regex IndexedField();
}
