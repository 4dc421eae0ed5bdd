using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Operator.Builders;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Operator.Runtime;

namespace Lowbit.Operator.Controllers;

/// <summary>What applying a child did.</summary>
public enum ApplyOutcome
{
    /// <summary>The observed child already matches the desired one (same spec hash): no request made.</summary>
    Unchanged,

    /// <summary>Server-side apply created or updated the child.</summary>
    Applied,

    /// <summary>The child had an immutable template that differs: it was deleted and is created on the next pass.</summary>
    Replaced,

    /// <summary>An object of that name exists but another owner controls it: left alone (never adopted or mutated).</summary>
    Foreign,
}

/// <summary>
/// Applies children with server-side apply (field manager <c>lowbit-operator</c>, force), only when the observed
/// child's spec hash differs from the desired one, so an unchanged object costs zero writes.
/// </summary>
public sealed class ChildApplier(IKubernetes client, IObjectCache cache)
{
    /// <summary>Applies a desired child against its cached namesake (a Job, Deployment or Service).</summary>
    public Task<ApplyOutcome> ApplyAsync(IKubernetesObject<V1ObjectMeta> owner, IKubernetesObject<V1ObjectMeta> desired, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(desired);
        var key = new ObjectKey(desired.Metadata.NamespaceProperty, desired.Metadata.Name);
        return desired switch
        {
            V1Job job => ApplyAsync(owner, job, cache.TryGet<V1Job>(key, out var observed) ? observed : null, cancellationToken),
            V1Deployment deployment => ApplyAsync(owner, deployment, cache.TryGet<V1Deployment>(key, out var observed) ? observed : null, cancellationToken),
            V1Service service => ApplyAsync(owner, service, cache.TryGet<V1Service>(key, out var observed) ? observed : null, cancellationToken),
            LeaderWorkerSet set => ApplyAsync(owner, set, cache.TryGet<LeaderWorkerSet>(key, out var observed) ? observed : null, cancellationToken),
            V1Scale scale => ScaleAsync(scale, cancellationToken),
            _ => throw new NotSupportedException($"applying {desired.GetType().Name} is not supported"),
        };
    }

    /// <summary>Sets a Deployment's replicas through its scale subresource (its template untouched: nothing rolls).</summary>
    private async Task<ApplyOutcome> ScaleAsync(V1Scale scale, CancellationToken cancellationToken)
    {
        var patch = new V1Patch(new { spec = new { replicas = scale.Spec.Replicas } }, V1Patch.PatchType.MergePatch);
        await client.AppsV1.PatchNamespacedDeploymentScaleAsync(patch, scale.Metadata.Name, scale.Metadata.NamespaceProperty, cancellationToken: cancellationToken)
            .ConfigureAwait(false);
        return ApplyOutcome.Applied;
    }

    public async Task<ApplyOutcome> ApplyAsync<T>(IKubernetesObject<V1ObjectMeta> owner, T desired, T? observed, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(desired);
        // Not in the cache: about to create. The cache may not have seen an object that already has this name (its
        // watch event can come after the owner's), and a forced apply would take a foreign object over (R9). One
        // live read, only on creation, closes that window.
        observed ??= await ReadLiveAsync<T>(desired.Metadata.NamespaceProperty, desired.Metadata.Name, cancellationToken).ConfigureAwait(false);
        if (observed is not null)
        {
            if (!ChildMeta.IsControlledBy(observed, owner))
            {
                return ApplyOutcome.Foreign;
            }

            if (ChildMeta.SpecHash(observed) == ChildMeta.SpecHash(desired))
            {
                return ApplyOutcome.Unchanged;
            }

            if (observed is V1Job)
            {
                // A Job's pod template is immutable: replace it (its pods go with it).
                await client.BatchV1.DeleteNamespacedJobAsync(observed.Metadata.Name, observed.Metadata.NamespaceProperty,
                    propagationPolicy: "Background", cancellationToken: cancellationToken).ConfigureAwait(false);
                return ApplyOutcome.Replaced;
            }
        }

        var patch = new V1Patch(desired, V1Patch.PatchType.ApplyPatch);
        var name = desired.Metadata.Name;
        var ns = desired.Metadata.NamespaceProperty;
        _ = desired switch
        {
            V1Job => (object)await client.BatchV1.PatchNamespacedJobAsync(patch, name, ns, fieldManager: Labels.FieldManager, force: true, cancellationToken: cancellationToken).ConfigureAwait(false),
            V1Deployment => await client.AppsV1.PatchNamespacedDeploymentAsync(patch, name, ns, fieldManager: Labels.FieldManager, force: true, cancellationToken: cancellationToken).ConfigureAwait(false),
            V1Service => await client.CoreV1.PatchNamespacedServiceAsync(patch, name, ns, fieldManager: Labels.FieldManager, force: true, cancellationToken: cancellationToken).ConfigureAwait(false),
            LeaderWorkerSet => await client.CustomObjects.PatchNamespacedCustomObjectAsync(patch, LeaderWorkerSet.Group, LeaderWorkerSet.Version, ns, LeaderWorkerSet.Plural, name,
                fieldManager: Labels.FieldManager, force: true, cancellationToken: cancellationToken).ConfigureAwait(false),
            _ => throw new NotSupportedException($"applying {typeof(T).Name} is not supported"),
        };
        return ApplyOutcome.Applied;
    }

    /// <summary>
    /// Deletes a child this owner controls (background propagation: its pods go with it); a child already gone or
    /// controlled by someone else is left alone.
    /// </summary>
    public async Task DeleteAsync(IKubernetesObject<V1ObjectMeta> owner, IKubernetesObject<V1ObjectMeta> child, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(owner);
        ArgumentNullException.ThrowIfNull(child);
        if (!ChildMeta.IsControlledBy(child, owner))
        {
            return;
        }

        var (name, ns) = (child.Metadata.Name, child.Metadata.NamespaceProperty);
        try
        {
            _ = child switch
            {
                V1Deployment => (object)await client.AppsV1.DeleteNamespacedDeploymentAsync(name, ns, propagationPolicy: "Background", cancellationToken: cancellationToken).ConfigureAwait(false),
                LeaderWorkerSet => await client.CustomObjects.DeleteNamespacedCustomObjectAsync(LeaderWorkerSet.Group, LeaderWorkerSet.Version, ns, LeaderWorkerSet.Plural, name,
                    propagationPolicy: "Background", cancellationToken: cancellationToken).ConfigureAwait(false),
                _ => throw new NotSupportedException($"deleting {child.GetType().Name} is not supported"),
            };
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            // Already gone.
        }
    }

    private async Task<T?> ReadLiveAsync<T>(string ns, string name, CancellationToken cancellationToken)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        try
        {
            return typeof(T) == typeof(V1Job) ? await client.BatchV1.ReadNamespacedJobAsync(name, ns, cancellationToken: cancellationToken).ConfigureAwait(false) as T
                : typeof(T) == typeof(V1Deployment) ? await client.AppsV1.ReadNamespacedDeploymentAsync(name, ns, cancellationToken: cancellationToken).ConfigureAwait(false) as T
                : typeof(T) == typeof(V1Service) ? await client.CoreV1.ReadNamespacedServiceAsync(name, ns, cancellationToken: cancellationToken).ConfigureAwait(false) as T
                : typeof(T) == typeof(LeaderWorkerSet) ? KubernetesJson.Deserialize<LeaderWorkerSet>(KubernetesJson.Serialize(
                    await client.CustomObjects.GetNamespacedCustomObjectAsync(LeaderWorkerSet.Group, LeaderWorkerSet.Version, ns, LeaderWorkerSet.Plural, name,
                        cancellationToken: cancellationToken).ConfigureAwait(false))) as T
                : null;
        }
        catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == System.Net.HttpStatusCode.NotFound)
        {
            return null;
        }
    }
}
