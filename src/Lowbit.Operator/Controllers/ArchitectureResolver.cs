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
/// built-in preset matching the source's name, <c>config.json</c> fetched over HTTP (Hub or URL sources, with the
/// token from the referenced Secret), or the result of an inspect Job (PVC sources). Fetched configs are cached.
/// </summary>
public sealed class ArchitectureResolver(IKubernetes client, IObjectCache cache, IOptions<WorkloadOptions> options, HttpClient http)
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

    /// <summary>The architecture of a model source; <paramref name="owner"/> is the QuantizedModel whose inspect Job applies (if any).</summary>
    public async Task<ArchitectureResolution> ResolveSourceAsync(QuantizedModel? owner, ModelSource source, string ns, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(source);
        var name = source.HuggingFace?.Repo ?? source.Url ?? source.Pvc?.Path ?? source.Pvc?.ClaimName ?? "";
        if (MatchPreset(name) is { } preset)
        {
            return new ArchitectureResolution.Resolved(preset, "preset");
        }

        if (source.Pvc is not null)
        {
            return owner is not null && InspectResult(owner) is { } fromInspect
                ? new ArchitectureResolution.Resolved(fromInspect, "inspect")
                : new ArchitectureResolution.NeedsInspect();
        }

        var url = source.HuggingFace is { } hub
            ? $"{options.Value.HubEndpoint.TrimEnd('/')}/{hub.Repo}/resolve/{hub.Revision ?? "main"}/config.json"
            : $"{source.Url!.TrimEnd('/')}/config.json";
        if (_fetched.TryGetValue(url, out var cached))
        {
            return new ArchitectureResolution.Resolved(cached, "config.json");
        }

        string? token = null;
        if (source.HuggingFace?.TokenSecretRef is { } secretRef)
        {
            try
            {
                var secret = await client.CoreV1.ReadNamespacedSecretAsync(secretRef.Name, ns, cancellationToken: cancellationToken).ConfigureAwait(false);
                if (secret.Data?.TryGetValue(secretRef.Key, out var bytes) != true)
                {
                    return new ArchitectureResolution.Failed(Conditions.Reasons.SecretNotFound, $"Secret {secretRef.Name} has no key '{secretRef.Key}' (spec.source.huggingFace.tokenSecretRef)", Terminal: false);
                }

                token = Encoding.UTF8.GetString(bytes!).Trim();
            }
            catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
            {
                return new ArchitectureResolution.Failed(Conditions.Reasons.SecretNotFound, $"Secret {secretRef.Name} not found (spec.source.huggingFace.tokenSecretRef)", Terminal: false);
            }
            catch (k8s.Autorest.HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.Forbidden)
            {
                // The Helm chart grants no Secret reads unless rbac.readTokenSecrets=true (pods get the token through secretKeyRef).
                return new ArchitectureResolution.Failed(Conditions.Reasons.SecretNotFound,
                    $"the operator may not read Secret {secretRef.Name} (spec.source.huggingFace.tokenSecretRef): annotate the model with {Annotation}=<preset> or install the chart with rbac.readTokenSecrets=true", Terminal: false);
            }
        }

        using var request = new HttpRequestMessage(HttpMethod.Get, url);
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        try
        {
            using var response = await http.SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                var status = (int)response.StatusCode;
                return new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec,
                    $"spec.source: GET config.json answered {status} {response.StatusCode}{(status is 401 or 403 ? " (a gated repo needs tokenSecretRef)" : "")}", Terminal: status is 401 or 403 or 404);
            }

            var json = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
            var architecture = HfConfigParser.Parse(json, name);
            _fetched[url] = architecture;
            return new ArchitectureResolution.Resolved(architecture, "config.json");
        }
        catch (PlanInputException ex)
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.InvalidSpec, $"spec.source: config.json: {ex.Message}", Terminal: true);
        }
        catch (HttpRequestException ex)
        {
            return new ArchitectureResolution.Failed(Conditions.Reasons.Pending, $"fetching config.json failed: {ex.Message}", Terminal: false);
        }
    }

    /// <summary>The built-in preset whose name the source names (longest match), e.g. meta-llama/Llama-2-7b-hf → Llama-2-7B.</summary>
    public static ModelArchitecture? MatchPreset(string sourceName)
    {
        var key = Normalize(sourceName);
        return ModelPresets.All.Values
            .Where(p => key.Contains(Normalize(p.Name), StringComparison.Ordinal))
            .OrderByDescending(p => Normalize(p.Name).Length)
            .FirstOrDefault();
    }

    /// <summary>The architecture from the QuantizedModel's succeeded inspect pod, if cached.</summary>
    public ModelArchitecture? InspectResult(QuantizedModel owner)
    {
        ArgumentNullException.ThrowIfNull(owner);
        var pods = cache.List<V1Pod>(owner.Metadata.NamespaceProperty).Where(p => ChildMeta.IsComponentOf(p, owner, InspectJobBuilder.Role));
        return StatusParts.SucceededResult(pods) is { } result ? InspectJobBuilder.Architecture(result, owner.Metadata.Name) : null;
    }

    private static string Normalize(string value) => new(value.ToLowerInvariant().Where(char.IsLetterOrDigit).ToArray());
}
