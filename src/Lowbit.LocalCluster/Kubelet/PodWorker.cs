using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// Drives one pod on a node like the kubelet's pod worker: image check (ErrImagePull, ImagePullBackOff),
/// configuration check (CreateContainerConfigError until the Secret or ConfigMap exists), init containers in
/// order, then the containers together with the pod's restart policy (CrashLoopBackOff with exponential
/// back-off), and the pod status: phase, conditions, container states, restart counts. Stops the containers
/// when the pod is deleted.
/// </summary>
internal sealed partial class PodWorker
{
    private readonly ClusterApi _api;
    private readonly PodLogStore _logs;
    private readonly IContainerRuntime _runtime;
    private readonly KubeletOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly V1Pod _pod;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _publish = new(1, 1);
    private readonly object _gate = new();
    private readonly Dictionary<string, V1ContainerStatus> _statuses = new(StringComparer.Ordinal);
    private readonly Dictionary<string, V1ContainerStatus> _initStatuses = new(StringComparer.Ordinal);
    private readonly string _podIp;
    private readonly Dictionary<string, int> _restartBase = new(StringComparer.Ordinal);
    private TimeSpan _grace = TimeSpan.FromSeconds(30);
    private bool _initialized;
    private bool _started;
    private DateTime? _startTime;
    private V1PodCondition? _disruption;
    private Task _task = Task.CompletedTask;

    public PodWorker(ClusterApi api, PodLogStore logs, IContainerRuntime runtime, KubeletOptions options, V1Pod pod, string podIp, TimeProvider time, ILogger logger)
    {
        _api = api;
        _logs = logs;
        _runtime = runtime;
        _options = options;
        _pod = pod;
        _podIp = podIp;
        _time = time;
        _logger = logger;
        // A pod whose containers ran before this worker (a restored cluster: the process restarted, as a node reboot) is
        // running again: its containers restart (restartCount + 1, like the kubelet after a reboot) and it reports
        // Running with unready containers until they start, not the Ready status it had before the restart.
        foreach (var status in pod.Status?.ContainerStatuses ?? [])
        {
            if (status.Started == true || status.State?.Running is not null || status.State?.Terminated is not null || status.LastState?.Terminated is not null)
            {
                _restartBase[status.Name] = status.RestartCount + 1;
            }
        }
        _started = _restartBase.Count > 0;
    }

    public string Uid => _pod.Metadata.Uid;

    public V1Pod Pod => _pod;

    public void Start() => _task = Task.Run(RunAsync);

    /// <summary>Stops the containers (each gets the grace period to exit) and waits until they have.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        _grace = grace;
        await _stop.CancelAsync().ConfigureAwait(false);
        await _task.ConfigureAwait(false);
    }

    private string Namespace => _pod.Metadata.NamespaceProperty;

    private string Name => _pod.Metadata.Name;

    private IList<V1Container> InitContainers => _pod.Spec.InitContainers ?? [];

    private IList<V1Container> Containers => _pod.Spec.Containers ?? [];

    private async Task RunAsync()
    {
        var stop = _stop.Token;
        try
        {
            lock (_gate)
            {
                _startTime = Now();
                foreach (var c in InitContainers)
                {
                    _initStatuses[c.Name] = Waiting(c, "PodInitializing", null);
                }
                foreach (var c in Containers)
                {
                    _statuses[c.Name] = Waiting(c, "ContainerCreating", null);
                    _statuses[c.Name].RestartCount = RestartBase(c);
                }
            }
            // Published at once (the kubelet reports ContainerCreating before it starts anything): a restored pod's
            // stale Ready=True would otherwise keep it in its Service's endpoints until its container is up again.
            await PublishAsync().ConfigureAwait(false);
            if (!await PullImagesAsync(stop).ConfigureAwait(false))
            {
                return;
            }
            foreach (var init in InitContainers)
            {
                if (!await RunInitAsync(init, stop).ConfigureAwait(false))
                {
                    return;
                }
            }
            lock (_gate)
            {
                _initialized = true;
            }
            using var podDone = CancellationTokenSource.CreateLinkedTokenSource(stop);
            await Task.WhenAll(Containers.Select(c => RunContainerAsync(c, podDone))).ConfigureAwait(false);
            await PublishAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception ex)
        {
            Log.WorkerFailed(_logger, ex, Namespace, Name);
        }
    }

    /// <summary>Checks every image; on failure the containers wait (ErrImagePull, then ImagePullBackOff) until the pod is deleted.</summary>
    private async Task<bool> PullImagesAsync(CancellationToken stop)
    {
        var failed = new List<(V1Container Container, ImagePullException Error)>();
        foreach (var container in InitContainers.Concat(Containers))
        {
            try
            {
                _runtime.CheckImage(_pod, container);
            }
            catch (ImagePullException ex)
            {
                failed.Add((container, ex));
            }
        }
        if (failed.Count == 0)
        {
            return true;
        }
        SetWaiting(failed.Select(f => (f.Container, f.Error.Reason, (string?)f.Error.Message)));
        await PublishAsync().ConfigureAwait(false);
        Log.ImagePullFailed(_logger, Namespace, Name, failed[0].Error.Message);
        if (failed.Any(f => f.Error.Reason == "ErrImagePull"))
        {
            await Task.Delay(_options.ImagePullBackOff, _time, stop).ConfigureAwait(false);
            SetWaiting(failed.Where(f => f.Error.Reason == "ErrImagePull")
                .Select(f => (f.Container, "ImagePullBackOff", (string?)$"Back-off pulling image \"{f.Container.Image}\": {f.Error.Message}")));
            await PublishAsync().ConfigureAwait(false);
        }
        await Task.Delay(Timeout.InfiniteTimeSpan, _time, stop).ConfigureAwait(false);
        return false;
    }

    /// <summary>Resolves a container's environment, waiting with CreateContainerConfigError while a Secret or ConfigMap is missing.</summary>
    private async Task<IReadOnlyDictionary<string, string>> ResolveEnvironmentAsync(V1Container container, CancellationToken stop)
    {
        while (true)
        {
            try
            {
                var env = ContainerEnvironment.Resolve(_api, _pod, container, _podIp);
                foreach (var volume in _pod.Spec.Volumes ?? [])
                {
                    if (volume.Secret is { } secret)
                    {
                        ContainerEnvironment.SecretData(_api, Namespace, secret.SecretName, secret.Optional == true);
                    }
                    if (volume.ConfigMap is { } configMap)
                    {
                        ContainerEnvironment.ConfigMapData(_api, Namespace, configMap.Name, configMap.Optional == true);
                    }
                }
                return env;
            }
            catch (ContainerConfigException ex)
            {
                SetWaiting([(container, "CreateContainerConfigError", ex.Message)]);
                await PublishAsync().ConfigureAwait(false);
                await Task.Delay(_options.ConfigRetryInterval, _time, stop).ConfigureAwait(false);
            }
        }
    }

    private async Task<bool> RunInitAsync(V1Container container, CancellationToken stop)
    {
        for (var attempt = 0; ; attempt++)
        {
            var env = await ResolveEnvironmentAsync(container, stop).ConfigureAwait(false);
            SetRunning(container, attempt, init: true);
            await PublishAsync().ConfigureAwait(false);
            var exit = await RunOnceAsync(container, attempt, env, stop).ConfigureAwait(false);
            SetTerminated(container, exit, init: true);
            if (exit.ExitCode == 0)
            {
                return true;
            }
            if (stop.IsCancellationRequested || _pod.Spec.RestartPolicy == "Never")
            {
                await PublishAsync().ConfigureAwait(false);
                return false;
            }
            await BackOffAsync(container, attempt + 1, init: true, stop).ConfigureAwait(false);
        }
    }

    private async Task RunContainerAsync(V1Container container, CancellationTokenSource podDone)
    {
        var stop = podDone.Token;
        try
        {
            for (var attempt = RestartBase(container); ; attempt++)
            {
                var env = await ResolveEnvironmentAsync(container, stop).ConfigureAwait(false);
                SetRunning(container, attempt, init: false);
                await PublishAsync().ConfigureAwait(false);
                var exit = await RunOnceAsync(container, attempt, env, stop).ConfigureAwait(false);
                SetTerminated(container, exit, init: false);
                if (exit.Disruption is { } reason)
                {
                    lock (_gate)
                    {
                        _disruption = new V1PodCondition
                        {
                            Type = "DisruptionTarget",
                            Status = "True",
                            Reason = reason,
                            Message = $"Simulated disruption ({reason}) of pod {Namespace}/{Name}",
                            LastTransitionTime = Now(),
                        };
                    }
                    await podDone.CancelAsync().ConfigureAwait(false);
                }
                if (stop.IsCancellationRequested)
                {
                    return;
                }
                var restart = _pod.Spec.RestartPolicy switch
                {
                    "Never" => false,
                    "OnFailure" => exit.ExitCode != 0,
                    _ => true,
                };
                if (!restart)
                {
                    await PublishAsync().ConfigureAwait(false);
                    return;
                }
                await BackOffAsync(container, attempt + 1, init: false, stop, attempt + 1 - RestartBase(container)).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>The restart count a container starts from: 0, or for a restored pod its count before the restart + 1.</summary>
    private int RestartBase(V1Container container) => _restartBase.GetValueOrDefault(container.Name);

    private async Task<ContainerExit> RunOnceAsync(V1Container container, int attempt, IReadOnlyDictionary<string, string> env, CancellationToken stop)
    {
        var run = new ContainerRun
        {
            Pod = _pod,
            PodIp = _podIp,
            Container = container,
            Attempt = attempt,
            Environment = env,
            Stop = stop,
            GracePeriod = () => _grace,
            SetReady = ready => SetReady(container, ready),
            WriteLog = text => _logs.Append(Namespace, Name, container.Name, text),
        };
        try
        {
            return await _runtime.RunAsync(run).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            Log.ContainerFailed(_logger, ex, Namespace, Name, container.Name);
            return new ContainerExit(128, "StartError", ex.Message);
        }
    }

    /// <summary>Waits out CrashLoopBackOff; the delay doubles per failure of this worker (<paramref name="failures"/>, default <paramref name="restarts"/>), as the kubelet's back-off starts afresh after a reboot.</summary>
    private async Task BackOffAsync(V1Container container, int restarts, bool init, CancellationToken stop, int? failures = null)
    {
        var delay = TimeSpan.FromTicks(Math.Min(_options.CrashLoopBackOff.Ticks * (1L << Math.Min((failures ?? restarts) - 1, 10)), TimeSpan.FromMinutes(5).Ticks));
        lock (_gate)
        {
            var statuses = init ? _initStatuses : _statuses;
            var status = statuses[container.Name];
            status.RestartCount = restarts;
            status.LastState = status.State;
            status.State = new V1ContainerState
            {
                Waiting = new V1ContainerStateWaiting
                {
                    Reason = "CrashLoopBackOff",
                    Message = $"back-off {(int)delay.TotalSeconds}s restarting failed container={container.Name} pod={Name}_{Namespace}({_pod.Metadata.Uid})",
                },
            };
            status.Ready = false;
            status.Started = false;
        }
        await PublishAsync().ConfigureAwait(false);
        await Task.Delay(delay, _time, stop).ConfigureAwait(false);
    }

    private void SetWaiting(IEnumerable<(V1Container Container, string Reason, string? Message)> waits)
    {
        lock (_gate)
        {
            foreach (var (container, reason, message) in waits)
            {
                var statuses = _initStatuses.ContainsKey(container.Name) && InitContainers.Contains(container) ? _initStatuses : _statuses;
                var restarts = statuses.TryGetValue(container.Name, out var old) ? old.RestartCount : 0;
                var status = Waiting(container, reason, message);
                status.RestartCount = restarts;
                status.LastState = old?.LastState;
                statuses[container.Name] = status;
            }
        }
    }

    private void SetRunning(V1Container container, int attempt, bool init)
    {
        lock (_gate)
        {
            var statuses = init ? _initStatuses : _statuses;
            var status = statuses[container.Name];
            status.State = new V1ContainerState { Running = new V1ContainerStateRunning { StartedAt = Now() } };
            status.Ready = !init && _runtime.ReadyOnStart(_pod, container);
            status.Started = true;
            status.RestartCount = attempt;
            status.ContainerID = $"lowbit://{_pod.Metadata.Uid}/{container.Name}/{attempt}";
            if (!init)
            {
                _started = true;
            }
        }
    }

    private void SetTerminated(V1Container container, ContainerExit exit, bool init)
    {
        lock (_gate)
        {
            var statuses = init ? _initStatuses : _statuses;
            var status = statuses[container.Name];
            status.State = new V1ContainerState
            {
                Terminated = new V1ContainerStateTerminated
                {
                    ExitCode = exit.ExitCode,
                    ContainerID = status.ContainerID,
                    FinishedAt = Now(),
                    Message = string.IsNullOrEmpty(exit.Message) ? null : exit.Message,
                    Reason = exit.Reason,
                    StartedAt = status.State?.Running?.StartedAt,
                },
            };
            status.Ready = false;
            status.Started = false;
        }
        _logs.Complete(Namespace, Name, container.Name);
    }

    private void SetReady(V1Container container, bool ready)
    {
        bool changed;
        lock (_gate)
        {
            var status = _statuses[container.Name];
            changed = status.State?.Running is not null && status.Ready != ready;
            if (changed)
            {
                status.Ready = ready;
            }
        }
        if (changed)
        {
            _ = PublishAsync();
        }
    }

    /// <summary>Writes the pod status when it differs from the stored one (status subresource, retried on conflicts).</summary>
    private async Task PublishAsync()
    {
        await _publish.WaitAsync().ConfigureAwait(false);
        try
        {
            for (var attempt = 0; attempt < 20; attempt++)
            {
                var stored = _api.TryGetStored(BuiltinResources.Pods, Namespace, Name);
                if (stored is null)
                {
                    return;
                }
                var pod = stored.As<V1Pod>();
                if (pod.Metadata.Uid != _pod.Metadata.Uid)
                {
                    return;
                }
                var status = BuildStatus(pod.Status);
                if (Typed.SameJson(pod.Status, status))
                {
                    return;
                }
                pod.Status = status;
                try
                {
                    _api.Replace(BuiltinResources.Pods, pod, "status");
                    return;
                }
                catch (ApiException ex) when (ex.Code == 409)
                {
                }
                catch (ApiException ex) when (ex.Code == 404)
                {
                    return;
                }
            }
        }
        finally
        {
            _publish.Release();
        }
    }

    private V1PodStatus BuildStatus(V1PodStatus? current)
    {
        lock (_gate)
        {
            var now = Now();
            var statuses = Containers.Select(c => Copy(_statuses[c.Name])).ToList();
            var initStatuses = InitContainers.Select(c => Copy(_initStatuses[c.Name])).ToList();
            var phase = Phase(statuses);
            var terminal = phase is "Succeeded" or "Failed";
            var unready = statuses.Where(s => s.Ready != true).Select(s => s.Name).ToList();
            var conditions = current?.Conditions?.ToList() ?? [];
            conditions = Typed.SetCondition(conditions, new V1PodCondition { Type = "PodReadyToStartContainers", Status = terminal ? "False" : "True", LastTransitionTime = now });
            conditions = Typed.SetCondition(conditions, _initialized
                ? new V1PodCondition { Type = "Initialized", Status = "True", LastTransitionTime = now }
                : new V1PodCondition { Type = "Initialized", Status = "False", Reason = "ContainersNotInitialized",
                    Message = $"containers with incomplete status: [{string.Join(" ", InitContainers.Select(c => c.Name))}]", LastTransitionTime = now });
            var readyReason = terminal ? (phase == "Succeeded" ? "PodCompleted" : "PodFailed") : "ContainersNotReady";
            var ready = !terminal && unready.Count == 0 && _started;
            foreach (var type in new[] { "ContainersReady", "Ready" })
            {
                conditions = Typed.SetCondition(conditions, ready
                    ? new V1PodCondition { Type = type, Status = "True", LastTransitionTime = now }
                    : new V1PodCondition
                    {
                        Type = type,
                        Status = "False",
                        Reason = readyReason,
                        Message = terminal ? null : $"containers with unready status: [{string.Join(" ", unready)}]",
                        LastTransitionTime = now,
                    });
            }
            if (conditions.FirstOrDefault(c => c.Type == "PodScheduled") is not { Status: "True" })
            {
                conditions = Typed.SetCondition(conditions, new V1PodCondition { Type = "PodScheduled", Status = "True", LastTransitionTime = now });
            }
            if (_disruption is not null)
            {
                conditions = Typed.SetCondition(conditions, _disruption);
            }
            var order = new[] { "DisruptionTarget", "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled" };
            conditions = conditions.OrderBy(c => Array.IndexOf(order, c.Type) is var i && i < 0 ? order.Length : i).ToList();
            return new V1PodStatus
            {
                Phase = phase,
                Conditions = conditions,
                HostIP = "127.0.0.1",
                HostIPs = [new V1HostIP { Ip = "127.0.0.1" }],
                PodIP = _podIp,
                PodIPs = [new V1PodIP { Ip = _podIp }],
                StartTime = _startTime,
                ContainerStatuses = statuses,
                InitContainerStatuses = initStatuses.Count == 0 ? null : initStatuses,
                QosClass = current?.QosClass ?? "BestEffort",
            };
        }
    }

    private string Phase(List<V1ContainerStatus> statuses)
    {
        if (_disruption is not null && statuses.All(s => s.State?.Terminated is not null))
        {
            return "Failed";
        }
        if (_initStatuses.Values.Any(s => s.State?.Terminated is { ExitCode: not 0 }) && _pod.Spec.RestartPolicy == "Never")
        {
            return "Failed";
        }
        if (!_started)
        {
            return "Pending";
        }
        if (statuses.All(s => s.State?.Terminated is not null) && _pod.Spec.RestartPolicy is "Never" or "OnFailure")
        {
            return statuses.All(s => s.State!.Terminated!.ExitCode == 0) ? "Succeeded" : "Failed";
        }
        return "Running";
    }

    private static V1ContainerStatus Waiting(V1Container container, string reason, string? message) => new()
    {
        Name = container.Name,
        Image = container.Image,
        ImageID = "",
        Ready = false,
        Started = false,
        RestartCount = 0,
        State = new V1ContainerState { Waiting = new V1ContainerStateWaiting { Reason = reason, Message = message } },
    };

    private static V1ContainerStatus Copy(V1ContainerStatus status) => new()
    {
        Name = status.Name,
        Image = status.Image,
        ImageID = status.ImageID,
        ContainerID = status.ContainerID,
        Ready = status.Ready,
        Started = status.Started,
        RestartCount = status.RestartCount,
        State = status.State,
        LastState = status.LastState,
    };

    private DateTime Now() => Typed.Truncate(_time.GetUtcNow());

    private static partial class Log
    {
        [LoggerMessage(EventId = 4201, Level = LogLevel.Error, Message = "Pod worker for {Namespace}/{Pod} failed")]
        public static partial void WorkerFailed(ILogger logger, Exception exception, string @namespace, string pod);

        [LoggerMessage(EventId = 4202, Level = LogLevel.Warning, Message = "Container {Container} of pod {Namespace}/{Pod} could not run")]
        public static partial void ContainerFailed(ILogger logger, Exception exception, string @namespace, string pod, string container);

        [LoggerMessage(EventId = 4203, Level = LogLevel.Information, Message = "Pod {Namespace}/{Pod}: image pull failed: {Message}")]
        public static partial void ImagePullFailed(ILogger logger, string @namespace, string pod, string message);
    }
}
