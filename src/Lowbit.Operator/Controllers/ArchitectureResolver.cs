using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Status;
using Lowbit.Planner;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Controllers;

/// <summary>How a model's architecture was found, or why not.</summary>
public abstract record ArchitectureResolution
{
    public sealed record Resolved(ModelArchitecture Architecture, string Via) : ArchitectureResolution;

    /// <summary>A PVC source: run the inspect Job and look again.</summary>
    public sealed record NeedsInspect : ArchitectureResolution;

    public sealed record Failed(string Reason, string Message, bool Terminal) : ArchitectureResolution;
}

/// <summary>
/// Finds the architecture the planner needs: the <c>lowbit.dev/architecture</c> annotation (a preset name), a
/// built-in preset matching the source's name, <c>config.json</c> fetched over HTTP (public Hub or http(s) URL sources: 1 MiB cap, short timeout; gated repos go
/// to the inspect Job, since the operator never reads Secrets), or the result of the owner's inspect Job (PVC sources;
/// QuantizedModels, FineTuneJobs and InferenceEndpoints alike). Fetched configs are cached.
/// </summary>
public sealed class ArchitectureResolver(IObjectCache cache, IOptions<WorkloadOptions> options, HttpClient http)
{
    public const string Annotation = ApiGroup.Group + "/architecture";

    private readonly ConcurrentDictionary<string, ModelArchitecture> _fetched = new(StringComparer.Ordinal);

    /// <summary>The architecture of a QuantizedModel's source.</summary>
    public async Task<ArchitectureResolution> ResolveAsync(QuantizedModel model, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Metadata.Annotations?.TryGetValue(Annotation, out var preset) == true)
        {
            return ModelPresets.TryGet(preset, out var named)
                ? new ArchitectureResolution.Resolved(named, "annotation")
                : new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec,
                    $"metadata.annotations[{Annotation}]: unknown preset '{preset}'; accepted: {string.Join(", ", ModelPresets.Names)}", Terminal: true);
        }

        return await ResolveSourceAsync(model, model.Spec.Source, model.Metadata.NamespaceProperty, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The architecture of the model a FineTuneJob or InferenceEndpoint (<paramref name="owner"/>) names: the owner's
    /// annotation's preset, else the referenced QuantizedModel's, else the source's (a PVC source or a gated repo: the
    /// owner's own inspect Job's result, or <see cref="ArchitectureResolution.NeedsInspect"/>).
    /// </summary>
    public async Task<ArchitectureResolution> ResolveReferenceAsync(IKubernetesObject<V1ObjectMeta> owner, QuantizedModel? model, ModelSource? source,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(owner);
        if (owner.Metadata.Annotations?.TryGetValue(Annotation, out var preset) == true)
        {
            return ModelPresets.TryGet(preset, out var named)
                ? new ArchitectureResolution.Resolved(named, "annotation")
                : new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec, $"metadata.annotations[{Annotation}]: unknown preset '{preset}'", Terminal: true);
        }

        if (model is not null)
        {
            return await ResolveAsync(model, cancellationToken).ConfigureAwait(false);
        }

        return await ResolveSourceAsync(owner, source!, owner.Metadata.NamespaceProperty, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// The architecture of a model source; <paramref name="owner"/> is the object whose inspect Job applies (any kind).
    /// Without an owner, a source that needs inspecting fails naming the field.
    /// </summary>
    public async Task<ArchitectureResolution> ResolveSourceAsync(IKubernetesObject<V1ObjectMeta>? owner, ModelSource source, string ns, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var name = source.HuggingFace?.Repo ?? source.Url ?? source.Pvc?.Path ?? source.Pvc?.ClaimName ?? "";
        if (MatchPreset(name) is { } preset)
        {
            return new ArchitectureResolution.Resolved(preset, "preset");
        }

        if (source.Pvc is not null)
        {
            return Inspected(owner, $"the architecture of a PVC source is read by an inspect Job of the resource that names it; set the {Annotation} annotation to a preset to skip it");
        }

        if (source.HuggingFace?.TokenSecretRef is not null)
        {
            // A gated repo: the operator never reads Secrets. The owner's inspect Job's pod gets the token as a
            // secretKeyRef and reads config.json itself.
            return Inspected(owner, $"spec.source.huggingFace.tokenSecretRef: the operator does not read Secrets, so a gated repo's architecture is read by an inspect Job of the resource that names it; set the {Annotation} annotation to a preset to skip it");
        }

        if (source.Url is { } raw && (!Uri.TryCreate(raw, UriKind.Absolute, out var parsed) || parsed.Scheme is not ("http" or "https")))
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec,
                $"spec.source.url: '{Truncate(raw, 100)}' is not an http(s) URL; accepted: http://, https:// (a PVC source for anything else)", Terminal: true);
        }

        var url = source.HuggingFace is { } hub
            ? $"{options.Value.HubEndpoint.TrimEnd('/')}/{hub.Repo}/resolve/{hub.Revision ?? "main"}/config.json"
            : $"{source.Url!.TrimEnd('/')}/config.json";
        if (_fetched.TryGetValue(url, out var cached))
        {
            return new ArchitectureResolution.Resolved(cached, "config.json");
        }

        var timeout = options.Value.ConfigFetchTimeout;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                // The status only: a remote error body never reaches status or Events.
                var status = (int)response.StatusCode;
                return new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec,
                    $"spec.source: GET config.json answered {status} {response.StatusCode}{(status is 401 or 403 ? " (a gated repo needs tokenSecretRef)" : "")}", Terminal: status is 401 or 403 or 404);
            }

            if (response.Content.Headers.ContentLength > MaxConfigBytes)
            {
                return TooLarge();
            }
            var body = new MemoryStream();
            await using (var stream = await response.Content.ReadAsStreamAsync(deadline.Token).ConfigureAwait(false))
            {
                var buffer = new byte[81920];
                int read;
                while ((read = await stream.ReadAsync(buffer, deadline.Token).ConfigureAwait(false)) > 0)
                {
                    if (body.Length + read > MaxConfigBytes)
                    {
                        return TooLarge();
                    }
                    body.Write(buffer, 0, read);
                }
            }
            var architecture = HfConfigParser.Parse(Encoding.UTF8.GetString(body.GetBuffer(), 0, (int)body.Length), name);
            _fetched[url] = architecture;
            return new ArchitectureResolution.Resolved(architecture, "config.json");
        }
        catch (PlanInputException ex)
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec, $"spec.source: config.json: {Truncate(ex.Message, 300)}", Terminal: true);
        }
        catch (HttpRequestException ex)
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.Pending, $"fetching config.json failed: {Truncate(ex.Message, 200)}", Terminal: false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.Pending, $"fetching config.json took longer than {timeout.TotalSeconds:0.#} s; retrying", Terminal: false);
        }
    }

    /// <summary>The most config.json the operator reads (real ones are a few KiB).</summary>
    public const int MaxConfigBytes = 1 << 20;

    private static ArchitectureResolution.Failed TooLarge() =>
        new(Conditions.Reasons.InvalidSpec, $"spec.source: config.json is larger than {MaxConfigBytes / 1024} KiB; it is not a model config", Terminal: true);

    private static string Truncate(string text, int max) => text.Length <= max ? text : text[..max] + "…";

    /// <summary>The built-in preset whose name the source names (longest match), e.g. meta-llama/Llama-2-7b-hf → Llama-2-7B.</summary>
    public static ModelArchitecture? MatchPreset(string sourceName)
    {
        var key = Normalize(sourceName);
        return ModelPresets.All.Values
            .Where(p => key.Contains(Normalize(p.Name), StringComparison.Ordinal))
            .OrderByDescending(p => Normalize(p.Name).Length)
            .FirstOrDefault();
    }

    /// <summary>
    /// A source only an inspect Job can read: its result when the owner's inspect pod succeeded, else
    /// <see cref="ArchitectureResolution.NeedsInspect"/>; without an owner (nothing to run it for), a terminal
    /// InvalidSpec saying <paramref name="withoutOwner"/>.
    /// </summary>
    private ArchitectureResolution Inspected(IKubernetesObject<V1ObjectMeta>? owner, string withoutOwner) =>
        owner is null
            ? new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec, withoutOwner, Terminal: true)
            : InspectResult(owner) is { } fromInspect
                ? new ArchitectureResolution.Resolved(fromInspect, "inspect")
                : new ArchitectureResolution.NeedsInspect();

    /// <summary>The architecture from the succeeded pod of <paramref name="owner"/>'s inspect Job (any kind), if cached.</summary>
    public ModelArchitecture? InspectResult(IKubernetesObject<V1ObjectMeta> owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        var pods = cache.List<V1Pod>(owner.Metadata.NamespaceProperty).Where(p => ChildMeta.IsComponentOf(p, owner, InspectJobBuilder.Role));
        return StatusParts.SucceededResult(pods) is { } result ? InspectJobBuilder.Architecture(result, owner.Metadata.Name) : null;
    }

    private static string Normalize(string value) => new(value.ToLowerInvariant().Where(char.IsLetterOrDigit).ToArray());
}
