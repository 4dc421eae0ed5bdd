using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Telemetry;
using Lowbit.Planner;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator;

/// <summary>The controllers <c>lowbit-operator</c> runs (shared by Program, <c>lowbit local up</c> and the tests).</summary>
public static class OperatorSetup
{
    public static void Configure(OperatorBuilder op)
    {
        ArgumentNullException.ThrowIfNull(op);
        var services = op.Services;
        services.AddOptions<WorkloadOptions>().Bind(op.Configuration.GetSection(WorkloadOptions.Section)).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<WorkloadOptions>, WorkloadOptionsValidator>());
        services.AddOptions<CatalogOptions>().Bind(op.Configuration.GetSection(CatalogOptions.Section)).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<CatalogOptions>, CatalogOptionsValidator>());
        services.TryAddSingleton(sp => sp.GetRequiredService<IOptions<CatalogOptions>>().Value.Load());
        services.TryAddSingleton(_ => new HttpClient { Timeout = TimeSpan.FromSeconds(20) });
        services.TryAddSingleton(sp => new ChildApplier(sp.GetRequiredService<IKubernetes>(), sp.GetRequiredService<IObjectCache>()));
        services.TryAddSingleton(sp => new StatusWriter(sp.GetRequiredService<IKubernetes>()));
        services.TryAddSingleton<EventRecorder>();
        services.TryAddSingleton<ArchitectureResolver>();
        services.TryAddSingleton<CostMetrics>();
        services.TryAddSingleton<ReconcileServices>();
        AddEndpointScraper(op);

        // The caches hold only what the reconcilers read of children: metadata, status, and a trimmed pod spec
        // (containers' names, images, args, ports). Pods outside our label never reach the operator; a Deployment,
        // Service or Job of someone else is cached as metadata only (enough to leave a same-named foreign object alone).
        // Every kind is held serialized (decoded per read) except pods: reconcilers scan their namespace's pods on
        // every reconcile, which must stay a cheap filter over typed objects, not a decode of each.
        op.Cache<V1Pod>(ManagedBySelector, CacheTransforms.TrimPod, serialized: false)
            .Cache(transform: CacheTransforms.MetadataOnlyUnless<V1Deployment>(IsOurs, CacheTransforms.TrimDeployment))
            .Cache(transform: CacheTransforms.MetadataOnlyUnless<V1Service>(IsOurs, CacheTransforms.TrimService))
            .Cache(transform: CacheTransforms.MetadataOnlyUnless<V1Job>(IsOurs, CacheTransforms.TrimJob))
            // An optional kind: while its CRD is not installed the cache stays empty (the endpoint says LeaderWorkerSetNotInstalled).
            .Cache(transform: CacheTransforms.MetadataOnlyUnless<LeaderWorkerSet>(IsOurs, LeaderWorkerSetCache.Trim), optional: true);
        // Reverse references as cache indexes: a QuantizedModel or FineTuneJob event finds the resources that use it
        // by key, on the informer's loop, without decoding every cached endpoint (10,000 endpoints made each
        // QuantizedModel event cost ~10,000 decodes and stalled that watch for minutes).
        op.Index<InferenceEndpoint>(QuantizedModelRefIndex, e => e.Spec.Model.QuantizedModelRef?.Name is { } m ? [Ref(e.Metadata, m)] : [])
            .Index<InferenceEndpoint>(FineTuneJobRefIndex, e => e.Spec.Adapters?.Select(a => Ref(e.Metadata, a.FineTuneJobRef.Name)) ?? [])
            .Index<FineTuneJob>(QuantizedModelRefIndex, j => j.Spec.BaseModel.QuantizedModelRef?.Name is { } m ? [Ref(j.Metadata, m)] : []);
        op.AddController<QuantizedModel, QuantizedModelReconciler>(c => c
                .Owns<V1Job>()
                .Watches<V1Pod>(PodsOf(QuantizedModel.KindName)))
            .AddController<FineTuneJob, FineTuneJobReconciler>(c => c
                .Owns<V1Job>()
                .Watches<V1Pod>(PodsOf(FineTuneJob.KindName))
                .Watches<QuantizedModel>(cache => m => cache.KeysByIndex<FineTuneJob>(QuantizedModelRefIndex, Ref(m.Metadata, m.Metadata.Name))))
            .AddController<InferenceEndpoint, InferenceEndpointReconciler>(c => c
                .Owns<V1Deployment>()
                .Owns<LeaderWorkerSet>()
                .Owns<V1Job>()
                .Owns<V1Service>()
                .Watches<V1Pod>(PodsOf(InferenceEndpoint.KindName))
                .Watches<QuantizedModel>(cache => m => cache.KeysByIndex<InferenceEndpoint>(QuantizedModelRefIndex, Ref(m.Metadata, m.Metadata.Name)))
                .Watches<FineTuneJob>(cache => j => cache.KeysByIndex<InferenceEndpoint>(FineTuneJobRefIndex, Ref(j.Metadata, j.Metadata.Name))));
    }

    private static readonly string ManagedBySelector = $"{Labels.ManagedBy}={Labels.ManagedByValue}";

    private static bool IsOurs(IKubernetesObject<V1ObjectMeta> obj) => ChildMeta.Label(obj, Labels.ManagedBy) == Labels.ManagedByValue;

    /// <summary>The leader's scrape of serving pods' /metrics (observed tokens/s, TTFT, USD per million tokens).</summary>
    private static void AddEndpointScraper(OperatorBuilder op)
    {
        var services = op.Services;
        services.AddOptions<EndpointScrapeOptions>().Bind(op.Configuration.GetSection(EndpointScrapeOptions.Section)).ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<EndpointScrapeOptions>, EndpointScrapeOptionsValidator>());
        services.TryAddSingleton(sp => new EndpointScraper(
            sp.GetRequiredService<IObjectCache>(),
            sp.GetRequiredService<CostMetrics>(),
            sp.GetRequiredService<OperatorState>(),
            sp.GetRequiredService<IOptions<EndpointScrapeOptions>>(),
            sp.GetKeyedService<TimeProvider>(EndpointScraper.ClockKey) ?? sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<ILogger<EndpointScraper>>()));
        services.AddHostedService(sp => sp.GetRequiredService<EndpointScraper>());
    }

    /// <summary>Pods carry <c>lowbit.dev/&lt;kind&gt;: &lt;owner&gt;</c> (their controller owner is a Job or ReplicaSet, not the CR).</summary>
    private static MapToRequests<V1Pod> PodsOf(string kind)
    {
        var key = Labels.OwnerKey(kind);
        return pod => ChildMeta.Label(pod, key) is { } owner ? [new ObjectKey(pod.Metadata.NamespaceProperty, owner)] : [];
    }

    /// <summary>Index of resources by the QuantizedModel they reference (<c>namespace/name</c>).</summary>
    public const string QuantizedModelRefIndex = "quantizedModelRef";

    /// <summary>Index of endpoints by the FineTuneJobs whose adapters they serve (<c>namespace/name</c>).</summary>
    public const string FineTuneJobRefIndex = "fineTuneJobRef";

    /// <summary>A same-namespace reference as an index value.</summary>
    private static string Ref(V1ObjectMeta referrer, string name) => $"{referrer.NamespaceProperty}/{name}";
}
