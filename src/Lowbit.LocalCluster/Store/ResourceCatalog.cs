using System.Collections.Immutable;
using k8s.Models;

namespace Lowbit.LocalCluster.Store;

/// <summary>
/// The resources the server serves: the built-ins below plus every established CRD version.
/// Lookups are lock-free (immutable snapshot); <see cref="Revision"/> changes whenever the set changes,
/// which discovery and OpenAPI use as their cache hash.
/// </summary>
public sealed class ResourceCatalog
{
    private ImmutableList<ResourceType> _types;
    private long _revision = 1;

    public ResourceCatalog()
    {
        _types = [.. BuiltinResources.All];
    }

    public long Revision => Interlocked.Read(ref _revision);

    public IReadOnlyList<ResourceType> All => _types;

    /// <summary>Finds a resource by group, version and plural (case-sensitive, as the URL spells it).</summary>
    public ResourceType? Find(string group, string version, string plural)
    {
        foreach (var type in _types)
        {
            if (type.Plural == plural && type.Version == version && type.Group == group)
            {
                return type;
            }
        }
        return null;
    }

    /// <summary>Finds the resource of a kind (first served version when <paramref name="version"/> is null).</summary>
    public ResourceType? FindKind(string group, string? version, string kind)
    {
        foreach (var type in _types)
        {
            if (type.Kind == kind && type.Group == group && (version is null || type.Version == version))
            {
                return type;
            }
        }
        return null;
    }

    /// <summary>The resource of a KubernetesClient model type (by its <see cref="KubernetesEntityAttribute"/>).</summary>
    public ResourceType For<T>()
    {
        var entity = typeof(T).GetCustomAttributes(typeof(KubernetesEntityAttribute), false)
            .OfType<KubernetesEntityAttribute>().FirstOrDefault()
            ?? throw new ArgumentException($"{typeof(T).Name} has no [KubernetesEntity] attribute", nameof(T));
        return Find(entity.Group, entity.ApiVersion, entity.PluralName)
            ?? throw new ArgumentException($"{entity.Group}/{entity.ApiVersion}/{entity.PluralName} is not served", nameof(T));
    }

    /// <summary>Finds a resource by its plural within a group/version, for URL routing.</summary>
    public bool IsNamespacedResource(string group, string version, string plural) =>
        Find(group, version, plural) is { Namespaced: true };

    public IEnumerable<(string Group, IReadOnlyList<string> Versions)> Groups()
    {
        return _types.Where(t => t.Group.Length > 0)
            .GroupBy(t => t.Group)
            .Select(g => (g.Key, (IReadOnlyList<string>)g.Select(t => t.Version).Distinct().OrderByDescending(VersionPriority).ToList()));
    }

    internal void ReplaceCustom(string crdName, IReadOnlyList<ResourceType> types)
    {
        ImmutableInterlocked.Update(ref _types, list =>
        {
            var kept = list.Where(t => !(t.IsCustom && $"{t.Plural}.{t.Group}" == crdName)).ToImmutableList();
            return kept.AddRange(types);
        });
        Interlocked.Increment(ref _revision);
    }

    /// <summary>Orders versions as Kubernetes does: GA before beta before alpha, higher numbers first.</summary>
    public static int VersionPriority(string version)
    {
        var match = System.Text.RegularExpressions.Regex.Match(version, @"^v(\d+)(?:(alpha|beta)(\d+))?$");
        if (!match.Success)
        {
            return 0;
        }
        var major = int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        var stage = match.Groups[2].Value switch { "" => 3, "beta" => 2, _ => 1 };
        var minor = match.Groups[3].Success ? int.Parse(match.Groups[3].Value, System.Globalization.CultureInfo.InvariantCulture) : 0;
        return (stage * 1000 + major) * 1000 + minor;
    }
}
