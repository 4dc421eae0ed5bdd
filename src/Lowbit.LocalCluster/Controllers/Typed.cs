using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>Conversions between stored JSON and KubernetesClient models, and small helpers the controllers share.</summary>
public static class Typed
{
    public static T As<T>(this StoredObject obj)
    {
        using var stream = new MemoryStream(obj.Json, writable: false);
        return KubernetesJson.Deserialize<T>(stream);
    }

    public static T As<T>(this JsonObject obj) => KubernetesJson.Deserialize<T>(obj.ToJsonString());

    public static JsonObject ToJson(object model) => JsonNode.Parse(KubernetesJson.Serialize(model))!.AsObject();

    /// <summary>Creates an object from a model; returns the stored model.</summary>
    public static T Create<T>(this ClusterApi api, ResourceType type, string? ns, T model) => api.Create(type, ns, ToJson(model!)).As<T>();

    /// <summary>Replaces an object (its resourceVersion is the precondition, so a stale copy gets 409); returns the stored JSON.</summary>
    public static JsonObject Replace<T>(this ClusterApi api, ResourceType type, T model, string? subresource = null)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        var meta = model.Metadata;
        return api.Update(type, meta.NamespaceProperty, meta.Name, ToJson(model), subresource: subresource);
    }

    public static string Key(this StoredObject obj) => obj.Key;

    public static string KeyOf(V1ObjectMeta meta) => StoredObject.KeyOf(meta.NamespaceProperty ?? "", meta.Name);

    public static (string? Namespace, string Name) SplitKey(string key)
    {
        var slash = key.IndexOf('/', StringComparison.Ordinal);
        var ns = key[..slash];
        return (ns.Length == 0 ? null : ns, key[(slash + 1)..]);
    }

    /// <summary>The controller owner reference of an object, if any.</summary>
    public static V1OwnerReference? ControllerOf(V1ObjectMeta meta) => meta.OwnerReferences?.FirstOrDefault(r => r.Controller == true);

    public static V1OwnerReference OwnerReference(IKubernetesObject<V1ObjectMeta> owner, string apiVersion, string kind) => new()
    {
        ApiVersion = apiVersion,
        Kind = kind,
        Name = owner.Metadata.Name,
        Uid = owner.Metadata.Uid,
        Controller = true,
        BlockOwnerDeletion = true,
    };

    public static DateTime ParseTime(string text) =>
        DateTime.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal);

    /// <summary>A time as the API writes it (seconds precision, UTC): what models round-trip to.</summary>
    public static DateTime Truncate(DateTimeOffset now)
    {
        var utc = now.UtcDateTime;
        return new DateTime(utc.Ticks - (utc.Ticks % TimeSpan.TicksPerSecond), DateTimeKind.Utc);
    }

    /// <summary>Sets (or replaces) a condition by type, keeping lastTransitionTime when the status did not change.</summary>
    public static List<V1PodCondition> SetCondition(IList<V1PodCondition>? conditions, V1PodCondition condition)
    {
        var list = conditions?.ToList() ?? [];
        var index = list.FindIndex(c => c.Type == condition.Type);
        if (index >= 0)
        {
            if (list[index].Status == condition.Status)
            {
                condition.LastTransitionTime = list[index].LastTransitionTime ?? condition.LastTransitionTime;
            }
            list[index] = condition;
        }
        else
        {
            list.Add(condition);
        }
        return list;
    }

    /// <summary>
    /// True when two models of the same type serialize to the same JSON (for "write status only if it changed").
    /// Serialization order is the model's property order, so equal values give equal text.
    /// </summary>
    public static bool SameJson(object? a, object? b) =>
        string.Equals(a is null ? "null" : KubernetesJson.Serialize(a), b is null ? "null" : KubernetesJson.Serialize(b), StringComparison.Ordinal);
}
