using System.Security.Cryptography;
using System.Text;
using k8s;
using k8s.Models;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Operator.Builders;

/// <summary>
/// What to apply for a serving Deployment: the Deployment (rolling for the <see cref="Changed"/> parts when there are
/// any), only its scale (the running template is kept), or nothing.
/// </summary>
public sealed record Rollout(IKubernetesObject<V1ObjectMeta>? Child, IReadOnlyList<string> Changed);

/// <summary>
/// Serving Deployments roll only for changes that matter (issue 17, item 1). The builder stamps one short hash per
/// part of the pod template (<see cref="FieldsAnnotation"/>); against the running Deployment, a change only in parts
/// the operator defaults (the image when <c>spec.image</c> is unset, resources when <c>spec.resources</c> is unset,
/// probes and security settings in <c>other</c>) leaves the running Deployment as it is (only a new
/// <c>spec.replicas</c> goes through the scale subresource), so an operator upgrade does not restart every endpoint; a change in what the spec, the plan or the served model decide (args, env, volumes, scheduling,
/// the placement in the template's metadata) rolls, and the reconcile records an Event naming the parts.
/// </summary>
public static class DeploymentRollout
{
    /// <summary>Annotation on the Deployment: <c>part=hash,…</c> of its pod template.</summary>
    public const string FieldsAnnotation = Api.ApiGroup.Group + "/template-fields";

    /// <summary>The parts hashed, in order.</summary>
    public static readonly IReadOnlyList<string> Parts = ["metadata", "image", "args", "env", "resources", "volumes", "scheduling", "other"];

    /// <summary>Stamps <see cref="FieldsAnnotation"/> from the Deployment's pod template (call before the spec hash).</summary>
    public static V1Deployment Stamp(V1Deployment deployment)
    {
        ArgumentNullException.ThrowIfNull(deployment);
        deployment.Metadata.Annotations ??= new Dictionary<string, string>(StringComparer.Ordinal);
        deployment.Metadata.Annotations[FieldsAnnotation] = string.Join(',', Hashes(deployment.Spec.Template).Select(kv => $"{kv.Key}={kv.Value}"));
        return deployment;
    }

    /// <summary>Stamps <see cref="FieldsAnnotation"/> from a LeaderWorkerSet's leader and worker templates, part by part (call before the spec hash).</summary>
    public static LeaderWorkerSets.LeaderWorkerSet Stamp(LeaderWorkerSets.LeaderWorkerSet set)
    {
        ArgumentNullException.ThrowIfNull(set);
        var template = set.Spec.LeaderWorkerTemplate;
        var leader = template.LeaderTemplate is null ? null : Hashes(template.LeaderTemplate);
        var worker = Hashes(template.WorkerTemplate);
        set.Metadata.Annotations ??= new Dictionary<string, string>(StringComparer.Ordinal);
        set.Metadata.Annotations[FieldsAnnotation] = string.Join(',', Parts.Select(p => $"{p}={Hash(new[] { leader?.GetValueOrDefault(p), worker[p] })}"));
        return set;
    }

    /// <summary>
    /// The LeaderWorkerSet to apply given the running one, by the Deployment's rule: the desired one when something that
    /// matters changed (or nothing did), none when only operator defaults changed and the replicas are the same. A new
    /// replica count with only defaults changed applies the whole desired object (a LeaderWorkerSet's scale goes
    /// through the same apply here), so those defaults roll then too.
    /// </summary>
    public static Rollout Decide(InferenceEndpoint endpoint, LeaderWorkerSets.LeaderWorkerSet desired, LeaderWorkerSets.LeaderWorkerSet? observed)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(desired);
        var changed = Changed(ChildMeta.Annotation(observed, FieldsAnnotation), ChildMeta.Annotation(desired, FieldsAnnotation));
        if (changed is null || changed.Count == 0 || changed.Any(p => Matters(endpoint, p)))
        {
            return new Rollout(desired, changed ?? []);
        }

        return observed?.Spec?.Replicas == desired.Spec.Replicas ? new Rollout(null, []) : new Rollout(desired, changed);
    }

    /// <summary>The parts whose hashes differ, or null when either side has none (a first child, or one an older operator made).</summary>
    private static List<string>? Changed(string? observed, string? desired) =>
        Parse(observed) is { } before && Parse(desired) is { } after
            ? Parts.Where(p => before.GetValueOrDefault(p) != after.GetValueOrDefault(p)).ToList()
            : null;

    /// <summary>
    /// The Deployment to apply given the running one: <paramref name="desired"/> when nothing that matters changed
    /// in its template (with the running template kept if only defaults changed), or when it rolls (with the parts).
    /// </summary>
    public static Rollout Decide(InferenceEndpoint endpoint, V1Deployment desired, V1Deployment? observed)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        ArgumentNullException.ThrowIfNull(desired);
        if (observed?.Spec is null || Parse(ChildMeta.Annotation(observed, FieldsAnnotation)) is not { } before
            || Parse(ChildMeta.Annotation(desired, FieldsAnnotation)) is not { } after)
        {
            // A first Deployment, or one an older operator made (no part hashes): the whole template counts.
            return new Rollout(desired, []);
        }

        var changed = Parts.Where(p => before.GetValueOrDefault(p) != after.GetValueOrDefault(p)).ToList();
        if (changed.Count == 0)
        {
            return new Rollout(desired, []);
        }

        if (changed.Any(p => Matters(endpoint, p)))
        {
            return new Rollout(desired, changed);
        }

        // Only operator defaults changed: the running Deployment stays (the informer cache keeps no template to copy,
        // and re-applying ours would roll); a new replica count goes through the scale subresource alone.
        return observed.Spec.Replicas == desired.Spec.Replicas
            ? new Rollout(null, [])
            : new Rollout(new V1Scale
            {
                ApiVersion = "autoscaling/v1",
                Kind = "Scale",
                Metadata = new V1ObjectMeta { Name = desired.Metadata.Name, NamespaceProperty = desired.Metadata.NamespaceProperty },
                Spec = new V1ScaleSpec { Replicas = desired.Spec.Replicas },
            }, []);
    }

    private static bool Matters(InferenceEndpoint endpoint, string part) => part switch
    {
        "image" => endpoint.Spec.Image is not null,
        "resources" => endpoint.Spec.Resources is not null,
        "other" => false,
        _ => true,
    };

    private static Dictionary<string, string>? Parse(string? annotation) =>
        annotation is null
            ? null
            : annotation.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(p => p.Split('=', 2)).Where(p => p.Length == 2)
                .ToDictionary(p => p[0], p => p[1], StringComparer.Ordinal);

    private static Dictionary<string, string> Hashes(V1PodTemplateSpec template)
    {
        var pod = template.Spec;
        var containers = pod.Containers ?? [];
        var rest = KubernetesJson.Deserialize<V1PodSpec>(KubernetesJson.Serialize(pod));
        rest.Containers = [.. containers.Select(c => new V1Container
        {
            Name = c.Name,
            Ports = c.Ports,
            StartupProbe = c.StartupProbe,
            ReadinessProbe = c.ReadinessProbe,
            LivenessProbe = c.LivenessProbe,
            SecurityContext = c.SecurityContext,
            ImagePullPolicy = c.ImagePullPolicy,
            TerminationMessagePath = c.TerminationMessagePath,
            TerminationMessagePolicy = c.TerminationMessagePolicy,
        })];
        rest.Volumes = null;
        rest.NodeSelector = null;
        rest.Tolerations = null;
        rest.Affinity = null;
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["metadata"] = Hash(template.Metadata),
            ["image"] = Hash(containers.Select(c => c.Image).ToList()),
            ["args"] = Hash(containers.Select(c => new { c.Command, c.Args }).ToList()),
            ["env"] = Hash(containers.Select(c => c.Env).ToList()),
            ["resources"] = Hash(containers.Select(c => c.Resources).ToList()),
            ["volumes"] = Hash(new { pod.Volumes, Mounts = containers.Select(c => c.VolumeMounts).ToList() }),
            ["scheduling"] = Hash(new { pod.NodeSelector, pod.Tolerations, pod.Affinity }),
            ["other"] = Hash(rest),
        };
    }

    private static string Hash(object? value) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(KubernetesJson.Serialize(value))))[..8];
}
