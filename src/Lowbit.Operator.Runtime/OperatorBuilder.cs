using k8s;
using k8s.Models;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Registers what the operator runs (KubeOps's <c>AddKubernetesOperator().AddController&lt;..&gt;()</c> shape):
/// <code>
/// OperatorHost.Build(args, op => op
///     .AddController&lt;QuantizedModel, QuantizedModelReconciler&gt;(c => c.Owns&lt;V1Job&gt;().Owns&lt;V1Pod&gt;())
///     .Watch&lt;V1Node&gt;());
/// </code>
/// </summary>
public sealed class OperatorBuilder
{
    private readonly List<Action<IServiceProvider, InformerRegistry>> _informers = [];
    private readonly List<Action<InformerRegistry>> _caches = [];
    private KubernetesClientConfiguration? _kubernetes;

    internal OperatorBuilder(IServiceCollection services, IConfiguration configuration)
    {
        Services = services;
        Configuration = configuration;
    }

    public IServiceCollection Services { get; }

    public IConfiguration Configuration { get; }

    /// <summary>Connect with this configuration instead of kubeconfig / in-cluster discovery (tests, <c>lowbit local up</c>).</summary>
    public OperatorBuilder UseKubernetes(KubernetesClientConfiguration configuration)
    {
        _kubernetes = configuration ?? throw new ArgumentNullException(nameof(configuration));
        return this;
    }

    /// <summary>Adjust options after configuration binding (validated at start either way).</summary>
    public OperatorBuilder Configure(Action<OperatorOptions> configure)
    {
        Services.Configure(configure);
        return this;
    }

    /// <summary>Use this clock (tests).</summary>
    public OperatorBuilder UseTimeProvider(TimeProvider time)
    {
        Services.Replace(ServiceDescriptor.Singleton(time));
        return this;
    }

    /// <summary>Cache a kind that no controller watches, for reconcilers to read through <see cref="IObjectCache"/>.</summary>
    public OperatorBuilder Watch<T>()
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        _informers.Add((_, registry) => registry.GetOrAdd<T>());
        return this;
    }

    /// <summary>
    /// Files every cached <typeparamref name="T"/> under the values <paramref name="values"/> returns, so event
    /// mappings and reconcilers find "which objects reference X" with <see cref="IObjectCache.KeysByIndex{T}"/>
    /// instead of decoding every cached object (which, on an informer's event loop, makes one event cost O(N)).
    /// </summary>
    public OperatorBuilder Index<T>(string name, Func<T, IEnumerable<string>> values)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(values);
        _caches.Add(registry => registry.AddIndex(name, values));
        return this;
    }

    /// <summary>
    /// What the informer of <typeparamref name="T"/> caches: only objects matching <paramref name="labelSelector"/>,
    /// each trimmed by <paramref name="transform"/> (managedFields are always dropped). Reconcilers then read the
    /// trimmed objects: keep every field they read. <paramref name="serialized"/>: see <see cref="CacheOptions{T}.Serialized"/>;
    /// <paramref name="optional"/>: see <see cref="CacheOptions{T}.Optional"/>.
    /// </summary>
    public OperatorBuilder Cache<T>(string? labelSelector = null, Func<T, T>? transform = null, bool serialized = true, bool optional = false)
        where T : class, IKubernetesObject<V1ObjectMeta>
    {
        var cache = new CacheOptions<T> { LabelSelector = labelSelector, Transform = transform, Serialized = serialized, Optional = optional };
        _caches.Add(registry => registry.Configure(cache));
        return this;
    }

    /// <summary>A controller for <typeparamref name="T"/> reconciled by <typeparamref name="TReconciler"/> (resolved per reconcile in its own DI scope).</summary>
    public OperatorBuilder AddController<T, TReconciler>(Action<ControllerBuilder<T>>? configure = null)
        where T : class, IKubernetesObject<V1ObjectMeta>
        where TReconciler : class, IReconciler<T>
    {
        var controller = new ControllerBuilder<T>();
        configure?.Invoke(controller);
        Services.TryAddScoped<TReconciler>();
        Services.AddSingleton<IController>(sp => controller.Build(sp, s => s.GetRequiredService<TReconciler>()));
        return this;
    }

    internal void Register()
    {
        Services.TryAddSingleton(TimeProvider.System);
        Services.TryAddSingleton<RuntimeMetrics>();
        Services.TryAddSingleton<OperatorState>();
        Services.AddOptions<OperatorOptions>()
            .Bind(Configuration.GetSection(OperatorOptions.Section))
            .PostConfigure(o =>
            {
                // --kubeconfig and --context on the command line, as kubectl spells them.
                o.Kubeconfig ??= Configuration["kubeconfig"];
                o.Context ??= Configuration["context"];

                // One identity per process, shared by the Lease and the User-Agent (so the API server's audit
                // log and our tests can tell two operator instances apart). HOSTNAME is the pod's name in a pod, also
                // where pods share a host (the embedded cluster's local executor).
                if (string.IsNullOrEmpty(o.LeaderElection.Identity))
                {
                    var host = Environment.GetEnvironmentVariable("HOSTNAME") is { Length: > 0 } pod ? pod : Environment.MachineName;
                    o.LeaderElection.Identity = $"{host}_{Guid.NewGuid():N}";
                }
            })
            .ValidateOnStart();
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<OperatorOptions>, OperatorOptionsValidator>());

        var explicitConfiguration = _kubernetes;
        Services.TryAddSingleton<IKubernetes>(sp =>
        {
            var options = sp.GetRequiredService<IOptions<OperatorOptions>>().Value;
            var configuration = explicitConfiguration ?? LoadConfiguration(options);
            var time = sp.GetRequiredService<TimeProvider>();
            var metrics = sp.GetRequiredService<RuntimeMetrics>();
            var retry = new ClientRetryOptions { MaxAttempts = options.ClientMaxAttempts, MaxRetryAfter = options.ClientMaxRetryAfter };
            return new Kubernetes(
                configuration,
                new UserAgentHandler(UserAgentHandler.For(options.LeaderElection.Identity!)),
                new ClientRetryHandler(retry, time, metrics, sp.GetRequiredService<ILogger<ClientRetryHandler>>()),
                new RequestMetricsHandler(metrics));
        });
        Services.TryAddSingleton(sp => new KubernetesRest(sp.GetRequiredService<IKubernetes>()));
        Services.TryAddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<OperatorOptions>>().Value;
            var registry = new InformerRegistry(
                sp.GetRequiredService<KubernetesRest>(),
                new InformerOptions
                {
                    Namespace = string.IsNullOrEmpty(options.WatchNamespace) ? null : options.WatchNamespace,
                    WatchTimeout = options.WatchTimeout,
                    IdleTimeout = options.WatchIdleTimeout,
                },
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<RuntimeMetrics>(),
                sp.GetRequiredService<ILoggerFactory>());
            foreach (var configure in _caches)
            {
                configure(registry);
            }

            foreach (var add in _informers)
            {
                add(sp, registry);
            }

            return registry;
        });
        Services.TryAddSingleton<IObjectCache>(sp => sp.GetRequiredService<InformerRegistry>());
        Services.TryAddSingleton(sp =>
        {
            var options = sp.GetRequiredService<IOptions<OperatorOptions>>().Value;
            var le = options.LeaderElection;
            return new LeaderElection(
                sp.GetRequiredService<IKubernetes>(),
                le,
                string.IsNullOrEmpty(le.LeaseNamespace) ? DefaultLeaseNamespace() : le.LeaseNamespace,
                le.Identity!,
                sp.GetRequiredService<TimeProvider>(),
                sp.GetRequiredService<RuntimeMetrics>(),
                sp.GetRequiredService<ILogger<LeaderElection>>());
        });
        Services.AddHostedService(sp =>
        {
            var options = sp.GetRequiredService<IOptions<OperatorOptions>>().Value;
            return new OperatorManager(
                sp.GetRequiredService<InformerRegistry>(),
                sp.GetServices<IController>(),
                sp.GetRequiredService<IOptions<OperatorOptions>>(),
                sp.GetRequiredService<OperatorState>(),
                sp.GetRequiredService<Microsoft.Extensions.Hosting.IHostApplicationLifetime>(),
                sp.GetRequiredService<ILogger<OperatorManager>>(),
                options.LeaderElection.Enabled ? sp.GetRequiredService<LeaderElection>() : null);
        });
    }

    private static KubernetesClientConfiguration LoadConfiguration(OperatorOptions options)
    {
        if (!string.IsNullOrEmpty(options.Kubeconfig))
        {
            if (!File.Exists(options.Kubeconfig))
            {
                throw new OptionsValidationException(nameof(OperatorOptions.Kubeconfig), typeof(OperatorOptions), [$"--kubeconfig: file '{options.Kubeconfig}' does not exist"]);
            }

            return KubernetesClientConfiguration.BuildConfigFromConfigFile(options.Kubeconfig, options.Context);
        }

        // KUBECONFIG, then ~/.kube/config, then the in-cluster service account.
        return string.IsNullOrEmpty(options.Context)
            ? KubernetesClientConfiguration.BuildDefaultConfig()
            : KubernetesClientConfiguration.BuildConfigFromConfigFile(currentContext: options.Context);
    }

    private static string DefaultLeaseNamespace()
    {
        var fromEnvironment = Environment.GetEnvironmentVariable("POD_NAMESPACE");
        if (!string.IsNullOrEmpty(fromEnvironment))
        {
            return fromEnvironment;
        }

        const string ServiceAccountNamespace = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
        return File.Exists(ServiceAccountNamespace) ? File.ReadAllText(ServiceAccountNamespace).Trim() : "default";
    }
}

/// <summary>The watches and settings of one controller.</summary>
public sealed class ControllerBuilder<T>
    where T : class, IKubernetesObject<V1ObjectMeta>
{
    private readonly List<Action<Controller<T>, InformerRegistry>> _watches = [];
    private string? _name;
    private int? _maxConcurrentReconciles;
    private TimeSpan? _reconcileTimeout;

    /// <summary>Reconcile the owner when a <typeparamref name="TChild"/> whose controller owner reference names a <typeparamref name="T"/> changes.</summary>
    public ControllerBuilder<T> Owns<TChild>()
        where TChild : class, IKubernetesObject<V1ObjectMeta>
    {
        _watches.Add((controller, registry) => controller.Owns(registry.GetOrAdd<TChild>()));
        return this;
    }

    /// <summary>Reconcile the keys <paramref name="map"/> returns when a <typeparamref name="TOther"/> changes (e.g. endpoints referencing a FineTuneJob).</summary>
    public ControllerBuilder<T> Watches<TOther>(MapToRequests<TOther> map)
        where TOther : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(map);
        _watches.Add((controller, registry) => controller.Watch(registry.GetOrAdd<TOther>(), map));
        return this;
    }

    /// <summary>As <see cref="Watches{TOther}(MapToRequests{TOther})"/>, with a map that reads the object caches (e.g. the resources that reference the changed object).</summary>
    public ControllerBuilder<T> Watches<TOther>(Func<IObjectCache, MapToRequests<TOther>> map)
        where TOther : class, IKubernetesObject<V1ObjectMeta>
    {
        ArgumentNullException.ThrowIfNull(map);
        _watches.Add((controller, registry) => controller.Watch(registry.GetOrAdd<TOther>(), map(registry)));
        return this;
    }

    public ControllerBuilder<T> WithName(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        _name = name;
        return this;
    }

    public ControllerBuilder<T> WithMaxConcurrentReconciles(int workers)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(workers, 1);
        _maxConcurrentReconciles = workers;
        return this;
    }

    public ControllerBuilder<T> WithReconcileTimeout(TimeSpan timeout)
    {
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(timeout, TimeSpan.Zero);
        _reconcileTimeout = timeout;
        return this;
    }

    internal Controller<T> Build(IServiceProvider services, Func<IServiceProvider, IReconciler<T>> resolve)
    {
        var options = services.GetRequiredService<IOptions<OperatorOptions>>().Value;
        var registry = services.GetRequiredService<InformerRegistry>();
        var controller = new Controller<T>(
            registry.GetOrAdd<T>(),
            resolve,
            services.GetRequiredService<IServiceScopeFactory>(),
            new ControllerOptions
            {
                Name = _name,
                MaxConcurrentReconciles = _maxConcurrentReconciles ?? options.MaxConcurrentReconciles,
                ReconcileTimeout = _reconcileTimeout ?? options.ReconcileTimeout,
            },
            services.GetRequiredService<TimeProvider>(),
            services.GetRequiredService<RuntimeMetrics>(),
            services.GetRequiredService<ILogger<Controller<T>>>());
        foreach (var watch in _watches)
        {
            watch(controller, registry);
        }

        return controller;
    }
}
