using System.Globalization;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Builders;

/// <summary>
/// The volumes of one workload pod: memory-backed <c>/dev/shm</c>, writable <c>/tmp</c> and cache, one volume per
/// PersistentVolumeClaim (mounted at <c>/mnt/&lt;claim&gt;</c>, read-only unless something is written to it), and
/// ConfigMap keys. Also turns sources into the paths and flags the engine gets.
/// </summary>
public sealed class VolumeSet
{
    public const string MountRoot = "/mnt";
    public const string ConfigMapRoot = "/config";

    private readonly List<(string Claim, bool Writable)> _claims = [];
    private readonly List<string> _configMaps = [];

    /// <summary>True when the pod downloads its model (a Hub or URL source) into the cache volume.</summary>
    public bool Downloads { get; private set; }

    /// <summary>The Hub token Secret the pod needs (as an env secretKeyRef), if any.</summary>
    public SecretKeyRef? HubToken { get; private set; }

    /// <summary>The path of <paramref name="path"/> inside <paramref name="claim"/>; mounts the claim.</summary>
    public string Pvc(string claim, string? path, bool writable = false)
    {
        var index = _claims.FindIndex(c => c.Claim == claim);
        if (index < 0)
        {
            _claims.Add((claim, writable));
        }
        else if (writable && !_claims[index].Writable)
        {
            _claims[index] = (claim, true);
        }

        return string.IsNullOrEmpty(path) ? $"{MountRoot}/{claim}" : $"{MountRoot}/{claim}/{path.Trim('/')}";
    }

    /// <summary>The file of a ConfigMap key; mounts the ConfigMap.</summary>
    public string ConfigMap(ConfigMapKeyRef key)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (!_configMaps.Contains(key.Name))
        {
            _configMaps.Add(key.Name);
        }

        return $"{ConfigMapRoot}/{key.Name}/{key.Key}";
    }

    /// <summary>
    /// What the engine's <c>--model</c> gets for a source: a Hub repo id (with revision and the token as a Secret
    /// reference), a URL, or a path in a mounted claim.
    /// </summary>
    public (string Model, string? Revision) Model(ModelSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.HuggingFace is { } hub)
        {
            HubToken = hub.TokenSecretRef;
            Downloads = true;
            return (hub.Repo, hub.Revision);
        }

        if (source.Url is { } url)
        {
            Downloads = true;
            return (url, null);
        }

        if (source.Pvc is { } pvc)
        {
            return (Pvc(pvc.ClaimName, pvc.Path), null);
        }

        throw new ArgumentException("the model source names none of huggingFace, url or pvc", nameof(source));
    }

    /// <summary>What a dataset flag gets: a file in a claim or ConfigMap, a URL, or a Hub dataset id.</summary>
    public string Data(DataSource source)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (source.ConfigMap is { } key)
        {
            return ConfigMap(key);
        }

        if (source.Pvc is { } pvc)
        {
            return Pvc(pvc.ClaimName, pvc.Path);
        }

        if (source.Url is { } url)
        {
            return url;
        }

        if (source.HuggingFace is { } hub)
        {
            HubToken ??= hub.TokenSecretRef;
            return hub.Repo;
        }

        throw new ArgumentException("the data source names none of huggingFace, url, pvc or configMap", nameof(source));
    }

    /// <summary>The directory a QuantizedModel's artifacts are in (its <c>spec.output</c>).</summary>
    public string Artifacts(QuantizedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Pvc(model.Spec.Output.Pvc.ClaimName, model.Spec.Output.Pvc.Path);
    }

    /// <summary>The folder of one export format of a QuantizedModel (the engine's layout, <see cref="ExportFormats.Folder"/>).</summary>
    public string Artifact(QuantizedModel model, ExportFormat format) => ExportFormats.Folder(Artifacts(model), EngineJobs.Format(format));

    /// <summary>The directory a FineTuneJob's adapter is in (its <c>spec.output</c>).</summary>
    public string Adapter(FineTuneJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        return Pvc(job.Spec.Output.Pvc.ClaimName, job.Spec.Output.Pvc.Path);
    }

    /// <summary>The pod's volumes; <paramref name="cacheSize"/> bounds the cache volume (the model download).</summary>
    public List<V1Volume> Volumes(WorkloadOptions options, ResourceQuantity? cacheSize = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var volumes = new List<V1Volume>
        {
            new() { Name = "dshm", EmptyDir = new V1EmptyDirVolumeSource { Medium = "Memory", SizeLimit = new ResourceQuantity(options.SharedMemorySize) } },
            new() { Name = "tmp", EmptyDir = new V1EmptyDirVolumeSource() },
            new() { Name = "cache", EmptyDir = new V1EmptyDirVolumeSource { SizeLimit = cacheSize } },
        };
        for (var i = 0; i < _claims.Count; i++)
        {
            volumes.Add(new V1Volume
            {
                Name = ClaimVolume(i),
                PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = _claims[i].Claim, ReadOnlyProperty = !_claims[i].Writable },
            });
        }

        for (var i = 0; i < _configMaps.Count; i++)
        {
            volumes.Add(new V1Volume { Name = ConfigMapVolume(i), ConfigMap = new V1ConfigMapVolumeSource { Name = _configMaps[i] } });
        }

        return volumes;
    }

    public List<V1VolumeMount> Mounts()
    {
        var mounts = new List<V1VolumeMount>
        {
            new() { Name = "dshm", MountPath = PodTemplates.ShmPath },
            new() { Name = "tmp", MountPath = PodTemplates.TmpPath },
            new() { Name = "cache", MountPath = PodTemplates.CachePath },
        };
        for (var i = 0; i < _claims.Count; i++)
        {
            mounts.Add(new V1VolumeMount { Name = ClaimVolume(i), MountPath = $"{MountRoot}/{_claims[i].Claim}", ReadOnlyProperty = !_claims[i].Writable });
        }

        for (var i = 0; i < _configMaps.Count; i++)
        {
            mounts.Add(new V1VolumeMount { Name = ConfigMapVolume(i), MountPath = $"{ConfigMapRoot}/{_configMaps[i]}", ReadOnlyProperty = true });
        }

        return mounts;
    }

    private static string ClaimVolume(int index) => string.Create(CultureInfo.InvariantCulture, $"pvc-{index}");

    private static string ConfigMapVolume(int index) => string.Create(CultureInfo.InvariantCulture, $"configmap-{index}");
}
