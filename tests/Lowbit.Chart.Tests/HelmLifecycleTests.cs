using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Lowbit.LocalCluster.Tests;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit.Abstractions;

namespace Lowbit.Chart.Tests;

/// <summary>
/// The chart's whole life against the embedded local cluster, with the real helm 4 and kubectl: <c>helm install</c>
/// runs the chart's operator Deployment (two replicas, leader election, secure metrics, the catalog ConfigMap) as
/// local processes of the operator built with the tests, each connecting with its own service-account token;
/// <c>helm upgrade</c> with a changed value rolls the pods onto a new ReplicaSet; <c>helm rollback</c> brings the
/// previous template and ReplicaSet back; the installed operator reconciles an example; <c>helm uninstall</c>
/// removes everything but the CRDs. Values: <c>charts/lowbit/ci/local-cluster-values.yaml</c>.
/// </summary>
public sealed class HelmLifecycleTests : IAsyncLifetime
{
    private const string Namespace = "lowbit-system";
    private const string Release = "lowbit"; // the chart names its objects after the release ("lowbit" contains the chart's name)
    private const string ExampleNamespace = "ml";
    private const string OtherNamespace = "elsewhere";
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(60);

    private readonly ITestOutputHelper _output;
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private string _work = "";
    private LocalClusterServer _server = null!;
    private IAsyncDisposable? _cluster;

    public HelmLifecycleTests(ITestOutputHelper output) => _output = output;

    private static string ValuesFile => Path.Combine(Chart.Dir, "ci", "local-cluster-values.yaml");

    public async Task InitializeAsync()
    {
        _work = Directory.CreateTempSubdirectory("lowbit-chart-lifecycle-").FullName;
        _server = await LocalClusterServer.StartAsync(new LocalClusterOptions
        {
            Store = new ClusterApiOptions { GracefulPodDeletion = true, BookmarkInterval = TimeSpan.FromMilliseconds(500) },
        });
        _cluster = await SimulatedCluster.AttachAsync(_server, new ClusterSimulationOptions
        {
            Nodes = NodesConfig.Parse("""
                nodes:
                - name: cpu-0
                  mode: execute
                  cpu: "4"
                  memory: 16Gi
                """),
            StateDirectory = Path.Combine(_work, "executor"),
            // The operator the tests were built with (its apphost sits next to them through the project reference):
            // the chart's image ghcr.io/lowbit-dev/lowbit-operator runs as this program. LOWBIT_TEST_OPERATOR names
            // another executable, e.g. out/lowbit-operator (the self-contained trimmed build that ships) after make build.
            OperatorPath = Environment.GetEnvironmentVariable("LOWBIT_TEST_OPERATOR") is { Length: > 0 } shipped
                ? Path.GetFullPath(shipped)
                : Path.Combine(AppContext.BaseDirectory, "lowbit-operator"),
        }, TimeProvider.System, NullLoggerFactory.Instance);
    }

    public async Task DisposeAsync()
    {
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync(); // stops the executed operator processes
        }

        await _server.DisposeAsync();
        Directory.Delete(_work, recursive: true);
    }

    [Fact]
    public async Task Does_install_upgrade_roll_back_and_uninstall_the_operator_that_reconciles_an_example()
    {
        // helm install: CRDs from crds/, then the operator; both replicas become Ready through /readyz.
        var install = await HelmAsync("install", Release, Chart.Dir, "--namespace", Namespace, "--create-namespace", "-f", ValuesFile);
        Assert.Contains("STATUS: deployed", install, StringComparison.Ordinal);
        Assert.Equal(3, _server.Api.List<V1CustomResourceDefinition>().Count(c => c.Spec.Group == "lowbit.dev"));
        var first = await WaitRolledOutAsync("install");
        Assert.Contains("--Logging:LogLevel:Default=Information", first.Deployment.Spec.Template.Spec.Containers[0].Args);

        // Leader election: the Lease names one of the two pods, and exactly one pod says it leads (its secure /metrics).
        await AssertOneLeaderAsync(first.Pods);
        await AssertSecureMetricsAsync(first.Pods[0]);

        // RBAC is enforced for the pods' service-account tokens: the chart's rules let the operator read its kinds but
        // not Secrets (every request the operator makes below must pass; none may be answered 403).
        var operatorToken = _server.Tokens.IssueServiceAccountToken(Namespace, Release);
        await KubectlAsync("--token", operatorToken, "get", "quantizedmodels,jobs,pods", "--all-namespaces");
        var secrets = await ToolResultAsync("kubectl", ["--token", operatorToken, "get", "secrets", "--all-namespaces"]);
        Assert.Contains($"secrets is forbidden: User \"system:serviceaccount:{Namespace}:{Release}\" cannot list resource \"secrets\"", secrets.StdErr, StringComparison.Ordinal);

        // helm upgrade with a changed value: a new pod template (checksum/values), a new ReplicaSet, new pods.
        await HelmAsync("upgrade", Release, Chart.Dir, "--namespace", Namespace, "-f", ValuesFile, "--set", "logLevel=Debug");
        var upgraded = await WaitRolledOutAsync("upgrade", after: first);
        Assert.Contains("--Logging:LogLevel:Default=Debug", upgraded.Deployment.Spec.Template.Spec.Containers[0].Args);
        Assert.NotEqual(ChecksumOf(first.Deployment), ChecksumOf(upgraded.Deployment));
        Assert.NotEqual(first.ReplicaSet, upgraded.ReplicaSet);
        Assert.Empty(upgraded.Pods.Select(p => p.Metadata.Name).Intersect(first.Pods.Select(p => p.Metadata.Name)));
        Assert.Equal(0, _server.Api.Get<V1ReplicaSet>(Namespace, first.ReplicaSet).Spec.Replicas);
        await AssertOneLeaderAsync(upgraded.Pods);

        // helm rollback to revision 1: the first template again, run by the first ReplicaSet scaled back up.
        await HelmAsync("rollback", Release, "1", "--namespace", Namespace);
        var rolledBack = await WaitRolledOutAsync("rollback", after: upgraded);
        Assert.Equal(ChecksumOf(first.Deployment), ChecksumOf(rolledBack.Deployment));
        Assert.Equal(first.Deployment.Spec.Template.Spec.Containers[0].Args, rolledBack.Deployment.Spec.Template.Spec.Containers[0].Args);
        Assert.Equal(first.ReplicaSet, rolledBack.ReplicaSet);
        Assert.Equal(0, _server.Api.Get<V1ReplicaSet>(Namespace, upgraded.ReplicaSet).Spec.Replicas);
        var leader = await AssertOneLeaderAsync(rolledBack.Pods);

        // The operator from the installed manifests reconciles an example: status written for the current generation
        // and the quantization Job created as its child, both by the leader (its identity is in every User-Agent).
        await KubectlAsync("create", "namespace", ExampleNamespace);
        await KubectlAsync("apply", "--namespace", ExampleNamespace, "-f", Example);
        await AssertReconciledByAsync(ExampleNamespace, leader);
        AssertNothingForbidden();

        // helm uninstall: the operator stops; its Deployment, RBAC, ConfigMap, Service and PDB go; the CRDs and the
        // user's objects stay (Helm never deletes what crds/ installed).
        await HelmAsync("uninstall", Release, "--namespace", Namespace);
        await WaitAsync("every operator pod gone after helm uninstall", () => _server.Api.List<V1Pod>(Namespace).Count == 0 ? "" : null);
        var instance = new ListOptions { LabelSelector = $"app.kubernetes.io/instance={Release}" };
        Assert.Empty(_server.Api.List<V1Deployment>(Namespace, instance));
        Assert.Empty(_server.Api.List<V1ReplicaSet>(Namespace));
        Assert.Empty(_server.Api.List<V1ServiceAccount>(Namespace, instance));
        Assert.Empty(_server.Api.List<V1ConfigMap>(Namespace, instance));
        Assert.Empty(_server.Api.List<V1Service>(Namespace, instance));
        Assert.Empty(_server.Api.List<V1PodDisruptionBudget>(Namespace, instance));
        Assert.Empty(_server.Api.List<V1Role>(null, instance));
        Assert.Empty(_server.Api.List<V1RoleBinding>(null, instance));
        Assert.Empty(_server.Api.List<V1ClusterRole>(null, instance));
        Assert.Empty(_server.Api.List<V1ClusterRoleBinding>(null, instance));
        Assert.Equal(3, _server.Api.List<V1CustomResourceDefinition>().Count(c => c.Spec.Group == "lowbit.dev"));
        Assert.NotNull(_server.Api.TryGet<QuantizedModel>(ExampleNamespace, "tiny-llama-int4"));
        _output.WriteLine($"lifecycle done in {_clock.Elapsed.TotalSeconds:F1} s");
    }

    [Fact]
    public async Task Does_reconcile_only_the_watched_namespace_with_namespaced_rbac()
    {
        // scope: namespaced: Roles in the watched namespace only, no cluster-wide rights on workloads; one replica.
        await KubectlAsync("create", "namespace", ExampleNamespace);
        await KubectlAsync("create", "namespace", OtherNamespace);
        await HelmAsync("install", Release, Chart.Dir, "--namespace", Namespace, "--create-namespace", "-f", ValuesFile,
            "--set", "scope=namespaced", "--set", $"watchNamespaces={{{ExampleNamespace}}}", "--set", "replicaCount=1");
        await KubectlAsync("apply", "--namespace", OtherNamespace, "-f", Example);
        var rollout = await WaitRolledOutAsync("namespaced install", replicas: 1);
        var identity = await WaitAsync($"the Lease {Namespace}/{Release} held by {rollout.Pods[0].Metadata.Name}", () =>
            _server.Api.TryGet<V1Lease>(Namespace, Release)?.Spec?.HolderIdentity is { } h && h.StartsWith(rollout.Pods[0].Metadata.Name + "_", StringComparison.Ordinal) ? h : null);

        await KubectlAsync("apply", "--namespace", ExampleNamespace, "-f", Example);
        await AssertReconciledByAsync(ExampleNamespace, identity);
        AssertNothingForbidden();

        // The model in the namespace it does not watch (applied first) is untouched, and its rights end there too.
        var elsewhere = _server.Api.Get<QuantizedModel>(OtherNamespace, "tiny-llama-int4");
        Assert.Null(elsewhere.Status?.ObservedGeneration);
        Assert.Empty(_server.Api.List<V1Job>(OtherNamespace));
        var token = _server.Tokens.IssueServiceAccountToken(Namespace, Release);
        var outside = await ToolResultAsync("kubectl", ["--token", token, "get", "quantizedmodels", "--namespace", OtherNamespace]);
        Assert.Contains($"cannot list resource \"quantizedmodels\" in API group \"lowbit.dev\" in the namespace \"{OtherNamespace}\"", outside.StdErr, StringComparison.Ordinal);
        var clusterWide = await ToolResultAsync("kubectl", ["--token", token, "get", "pods", "--all-namespaces"]);
        Assert.Contains("cannot list resource \"pods\" in API group \"\" at the cluster scope", clusterWide.StdErr, StringComparison.Ordinal);
        _output.WriteLine($"namespaced done in {_clock.Elapsed.TotalSeconds:F1} s");
    }

    private static string Example => Path.Combine(ClusterFixture.RepoRoot, "examples", "local", "quantizedmodel-tiny-llama.yaml");

    /// <summary>
    /// The example QuantizedModel in <paramref name="ns"/> reconciled by the operator whose identity is <paramref name="identity"/>:
    /// status for the current generation with a Ready condition, and the quantization Job it owns, both written by it.
    /// </summary>
    private async Task AssertReconciledByAsync(string ns, string identity)
    {
        var model = await WaitAsync($"the example QuantizedModel {ns}/tiny-llama-int4 reconciled (status.observedGeneration = metadata.generation, a Ready condition, an owned Job)", () =>
            _server.Api.TryGet<QuantizedModel>(ns, "tiny-llama-int4") is { } m
                && m.Status?.ObservedGeneration == m.Metadata.Generation
                && m.Status?.Conditions?.Any(c => c.Type == "Ready") == true
                && OwnedJobs(m).Count > 0
                ? m : null);
        var job = Assert.Single(OwnedJobs(model));
        var writes = _server.Journal.Writes;
        Assert.Contains(writes, w => w.Path.Contains($"/namespaces/{ns}/quantizedmodels/tiny-llama-int4/status", StringComparison.Ordinal) && w.UserAgent.Contains(identity, StringComparison.Ordinal));
        Assert.Contains(writes, w => w.Path.Contains($"/namespaces/{ns}/jobs/{job.Metadata.Name}", StringComparison.Ordinal) && w.UserAgent.Contains(identity, StringComparison.Ordinal));
    }

    /// <summary>No request of the operator (its User-Agent) was refused by the chart's RBAC.</summary>
    private void AssertNothingForbidden()
    {
        var forbidden = _server.Journal.Entries.Where(e => e.Status == 403 && e.UserAgent.StartsWith("lowbit-operator/", StringComparison.Ordinal)).ToList();
        Assert.True(forbidden.Count == 0, "the chart's RBAC refused the operator: " + string.Join("; ", forbidden.Select(e => $"{e.Verb} {e.Path}")) + "\n" + Diagnose());
    }

    /// <summary>A finished rollout: the Deployment, the ReplicaSet running it, and its pods (exactly the desired number, none left over).</summary>
    private sealed record Rollout(V1Deployment Deployment, string ReplicaSet, IReadOnlyList<V1Pod> Pods);

    private async Task<Rollout> WaitRolledOutAsync(string step, Rollout? after = null, int replicas = 2)
    {
        var rollout = await WaitAsync($"{step}: Deployment {Namespace}/{Release} rolled out ({replicas} updated, ready and available replicas, no other pods)", () =>
        {
            var d = _server.Api.TryGet<V1Deployment>(Namespace, Release);
            if (d?.Status is not { } s || s.ObservedGeneration < d.Metadata.Generation || (after is not null && d.Metadata.Generation == after.Deployment.Metadata.Generation)
                || s.UpdatedReplicas != replicas || s.ReadyReplicas != replicas || s.AvailableReplicas != replicas || s.Replicas != replicas)
            {
                return null;
            }

            var pods = _server.Api.List<V1Pod>(Namespace);
            var hashes = pods.Select(p => p.Metadata.Labels?["pod-template-hash"]).Distinct().ToList();
            var ready = pods.All(p => p.Metadata.DeletionTimestamp is null && p.Status?.Conditions?.Any(c => c.Type == "Ready" && c.Status == "True") == true);
            return pods.Count == replicas && hashes.Count == 1 && ready
                ? new Rollout(d, $"{Release}-{hashes[0]}", pods)
                : null;
        });
        _output.WriteLine($"{_clock.Elapsed.TotalSeconds,5:F1} s  {step}: {rollout.ReplicaSet} runs {string.Join(", ", rollout.Pods.Select(p => $"{p.Metadata.Name}@{p.Status.PodIP} (created {p.Metadata.CreationTimestamp:HH:mm:ss}, started {p.Status.StartTime:HH:mm:ss}, ready {p.Status.Conditions.First(c => c.Type == "Ready").LastTransitionTime:HH:mm:ss})"))}");
        return rollout;
    }

    /// <summary>
    /// The Lease names one of <paramref name="pods"/> (the operator's identity is &lt;pod&gt;_&lt;uuid&gt;) and the pods' own
    /// <c>leader_election_master_status</c> gauges add up to one, on the leader; returns the leader's identity.
    /// </summary>
    private async Task<string> AssertOneLeaderAsync(IReadOnlyList<V1Pod> pods)
    {
        var holder = await WaitAsync($"the Lease {Namespace}/{Release} held by one of {string.Join(", ", pods.Select(p => p.Metadata.Name))}", () =>
            _server.Api.TryGet<V1Lease>(Namespace, Release)?.Spec?.HolderIdentity is { } h && pods.Any(p => h.StartsWith(p.Metadata.Name + "_", StringComparison.Ordinal)) ? h : null);
        var leaderPod = pods.Single(p => holder.StartsWith(p.Metadata.Name + "_", StringComparison.Ordinal));
        var gauges = await WaitAsync("each pod's leader_election_master_status gauge agreeing with the Lease", async () =>
        {
            var values = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var pod in pods)
            {
                using var response = await MetricsAsync(pod, _server.Token);
                var text = await response.Content.ReadAsStringAsync();
                values[pod.Metadata.Name] = Series(text, $"leader_election_master_status{{name=\"{Release}\"}}") ?? -1;
            }

            return values[leaderPod.Metadata.Name] == 1 && values.Values.Sum() == 1 ? values : null;
        });
        Assert.Equal(1, gauges.Values.Count(v => v == 1));
        return holder;
    }

    /// <summary>
    /// Secure metrics as the chart configures them: probes open on the health port; HTTPS on the pod's metrics port; no token 401; a service account
    /// without the metrics-reader role 403; bound to the chart's ClusterRole <c>lowbit-metrics-reader</c> 200 (the
    /// operator asked the API server through TokenReview and SubjectAccessReview).
    /// </summary>
    private async Task AssertSecureMetricsAsync(V1Pod pod)
    {
        // The probes' port answers the kubelet without a token, and never serves /metrics.
        using var plain = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        var health = pod.Spec.Containers[0].Ports.Single(p => p.Name == "health").ContainerPort;
        foreach (var (path, expected) in new[] { ("/healthz", HttpStatusCode.OK), ("/readyz", HttpStatusCode.OK), ("/metrics", HttpStatusCode.NotFound) })
        {
            using var response = await plain.GetAsync(new Uri($"http://{pod.Status.PodIP}:{health}{path}"));
            Assert.True(response.StatusCode == expected, $"{path} on the health port: {(int)response.StatusCode}, expected {(int)expected}");
        }

        using (var anonymous = await MetricsAsync(pod, token: null))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        }

        var prometheus = _server.Tokens.IssueServiceAccountToken("monitoring", "prometheus");
        using (var forbidden = await MetricsAsync(pod, prometheus))
        {
            Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        }

        await KubectlAsync("create", "clusterrolebinding", "prometheus-lowbit-metrics", $"--clusterrole={Release}-metrics-reader", "--serviceaccount=monitoring:prometheus");
        var allowedToken = _server.Tokens.IssueServiceAccountToken("monitoring", "prometheus"); // answers are cached per token
        using var allowed = await MetricsAsync(pod, allowedToken);
        Assert.Equal(HttpStatusCode.OK, allowed.StatusCode);
        Assert.Contains("# TYPE leader_election_master_status gauge", await allowed.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        await KubectlAsync("delete", "clusterrolebinding", "prometheus-lowbit-metrics");
    }

    private static async Task<HttpResponseMessage> MetricsAsync(V1Pod pod, string? token)
    {
        // The operator's self-signed certificate, as Prometheus scrapes it without metrics.certSecret (insecureSkipVerify).
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = HttpClientHandler.DangerousAcceptAnyServerCertificateValidator };
        using var http = new HttpClient(handler, disposeHandler: false) { Timeout = TimeSpan.FromSeconds(10) };
        var port = pod.Spec.Containers[0].Ports.Single(p => p.Name == "metrics").ContainerPort;
        using var request = new HttpRequestMessage(HttpMethod.Get, new Uri($"https://{pod.Status.PodIP}:{port}/metrics"));
        if (token is not null)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }

        var response = await http.SendAsync(request);
        await response.Content.LoadIntoBufferAsync();
        return response;
    }

    private static double? Series(string exposition, string series) =>
        exposition.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal)) is { } line
            ? double.Parse(line[(series.Length + 1)..], CultureInfo.InvariantCulture)
            : null;

    private static string? ChecksumOf(V1Deployment deployment) => deployment.Spec.Template.Metadata.Annotations?["checksum/values"];

    private List<V1Job> OwnedJobs(QuantizedModel model) =>
        [.. _server.Api.List<V1Job>(model.Metadata.NamespaceProperty).Where(j => j.Metadata.OwnerReferences?.Any(o => o.Controller == true && o.Uid == model.Metadata.Uid) == true)];

    private async Task<string> HelmAsync(params string[] args) => await ToolAsync("helm", args);

    private async Task<string> KubectlAsync(params string[] args) => await ToolAsync("kubectl", args);

    private async Task<string> ToolAsync(string tool, string[] args)
    {
        var result = await ToolResultAsync(tool, args);
        Assert.True(result.ExitCode == 0, $"{tool} {string.Join(' ', args)} failed ({result.ExitCode}): {result.StdErr}\n{result.StdOut}\n{Diagnose()}");
        return result.StdOut;
    }

    private async Task<ToolResult> ToolResultAsync(string tool, string[] args)
    {
        var home = Path.Combine(_work, "home");
        Directory.CreateDirectory(home);
        var result = await ClusterFixture.RunToolAsync(ClusterFixture.Tool(tool), args, _server.KubeconfigPath, home, Patience);
        _output.WriteLine($"{_clock.Elapsed.TotalSeconds,5:F1} s  {tool} {string.Join(' ', args.Select(a => a.Length > 40 ? a[..8] + "…" : a))} → {result.ExitCode}");
        return result;
    }

    private Task<T> WaitAsync<T>(string what, Func<T?> probe)
        where T : class => WaitAsync(what, () => Task.FromResult(probe()));

    /// <summary>Polls <paramref name="probe"/> until it returns a value; after <see cref="Patience"/> fails naming the wait, with the pods' states and logs.</summary>
    private async Task<T> WaitAsync<T>(string what, Func<Task<T?>> probe)
        where T : class
    {
        var deadline = DateTime.UtcNow + Patience;
        while (true)
        {
            if (await probe() is { } value)
            {
                return value;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new Xunit.Sdk.XunitException($"{what}: not reached within {Patience.TotalSeconds} s\n{Diagnose()}");
            }

            await Task.Delay(100);
        }
    }

    /// <summary>The Deployment's status, every operator pod's state and the tail of its log: what a failure message needs.</summary>
    private string Diagnose()
    {
        var text = new StringBuilder();
        var deployment = _server.Api.TryGet<V1Deployment>(Namespace, Release);
        text.AppendLine(CultureInfo.InvariantCulture, $"Deployment {Namespace}/{Release}: {(deployment is null ? "absent" : Json(deployment.Status))}");
        text.AppendLine(CultureInfo.InvariantCulture, $"Lease: {_server.Api.TryGet<V1Lease>(Namespace, Release)?.Spec?.HolderIdentity ?? "none"}");
        foreach (var pod in _server.Api.List<V1Pod>())
        {
            var state = pod.Status?.ContainerStatuses?.FirstOrDefault();
            var unscheduled = pod.Status?.Conditions?.FirstOrDefault(c => c.Type == "PodScheduled" && c.Status == "False")?.Message;
            text.AppendLine(CultureInfo.InvariantCulture,
                $"pod {pod.Metadata.NamespaceProperty}/{pod.Metadata.Name} on {pod.Spec.NodeName ?? "(unscheduled)"} ip {pod.Status?.PodIP}: {pod.Status?.Phase}, ready {state?.Ready}, restarts {state?.RestartCount}, state {Json(state?.State)}, last {Json(state?.LastState)}{(unscheduled is null ? "" : ", unschedulable: " + unscheduled)}");
            foreach (var container in _server.Logs.Containers(pod.Metadata.NamespaceProperty, pod.Metadata.Name))
            {
                text.AppendLine("  log (last 30 lines):");
                text.AppendLine(_server.Logs.Read(pod.Metadata.NamespaceProperty, pod.Metadata.Name, container, tailLines: 30));
            }
        }

        return text.ToString();
    }

    private static string Json(object? value) => value is null ? "none" : k8s.KubernetesJson.Serialize(value);
}
