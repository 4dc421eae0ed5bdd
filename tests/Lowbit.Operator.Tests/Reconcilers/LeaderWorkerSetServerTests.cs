using System.Diagnostics;
using System.Text.Json.Nodes;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.LeaderWorkerSets;
using Lowbit.Operator.Status;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>
/// A multi-node vLLM endpoint against the embedded API server with the operator in process: the LeaderWorkerSet it
/// renders read back through the real <c>kubectl</c>, readiness from the LWS status, the switch to a Deployment when
/// one node fits again; and, on a cluster without the LWS CRD, <c>LeaderWorkerSetNotInstalled</c> with the operator
/// still running. Nothing runs LeaderWorkerSets here (no LWS controller): the test writes its status as LWS would.
/// </summary>
public sealed class LeaderWorkerSetServerTests
{
    private static InferenceEndpoint Endpoint(string name, string allowed) => new()
    {
        Metadata = new V1ObjectMeta
        {
            Name = name,
            NamespaceProperty = "default",
            Annotations = new Dictionary<string, string> { [ArchitectureResolver.Annotation] = "llama-3.1-405b" },
        },
        Spec = LeaderWorkerSetTests.Endpoint(allowed).Spec,
    };

    [Fact]
    public async Task Does_render_a_leader_worker_set_that_kubectl_reads_back_and_turn_ready_with_its_groups()
    {
        await using var h = await OperatorHarness.StartAsync(leaderWorkerSet: true, https: true);
        h.Create(Endpoint("big", "a100-80gb"));
        await h.WaitAsync<LeaderWorkerSet>("big-inference", _ => true, "LeaderWorkerSet created");

        var lws = JsonNode.Parse(await KubectlAsync(h, "get", "leaderworkersets.leaderworkerset.x-k8s.io", "big-inference", "-o", "json"))!;
        Assert.Equal("leaderworkerset.x-k8s.io/v1", (string?)lws["apiVersion"]);
        Assert.Equal("InferenceEndpoint", (string?)lws["metadata"]!["ownerReferences"]![0]!["kind"]);
        var template = lws["spec"]!["leaderWorkerTemplate"]!;
        Assert.Equal(2, (int)template["size"]!);
        Assert.Equal("RecreateGroupOnPodRestart", (string?)template["restartPolicy"]);
        var leader = template["leaderTemplate"]!["spec"]!["containers"]![0]!;
        var script = (string)leader["args"]![0]!;
        Assert.Contains("--tensor-parallel-size 8", script, StringComparison.Ordinal);
        Assert.Contains("--pipeline-parallel-size 2 --distributed-executor-backend ray", script, StringComparison.Ordinal);
        Assert.Equal("8", (string?)leader["resources"]!["limits"]!["nvidia.com/gpu"]);
        var worker = template["workerTemplate"]!["spec"]!["containers"]![0]!;
        Assert.StartsWith("until ray start --address=$(LWS_LEADER_ADDRESS):6379 --block", (string)worker["args"]![0]!, StringComparison.Ordinal);
        Assert.Equal("8", (string?)worker["resources"]!["limits"]!["nvidia.com/gpu"]);
        // Defaults from the CRD's schema, as the real API server applies them.
        Assert.Equal("LeaderCreated", (string?)lws["spec"]!["startupPolicy"]);
        var selector = await KubectlAsync(h, "get", "service", "big-inference", "-o", "jsonpath={.spec.selector.leaderworkerset\\.sigs\\.k8s\\.io/worker-index}");
        Assert.Equal("0", selector);
        Assert.Null(h.Api.TryGet<V1Deployment>("default", "big-inference"));

        var progressing = await h.WaitAsync<InferenceEndpoint>("big", e => e.Status?.Group is not null, "status.group");
        Assert.Equal(("LeaderWorkerSet", "big-inference", 2, 0), (progressing.Status!.Group!.Kind, progressing.Status.Group.Name, progressing.Status.Group.Size, progressing.Status.Group.ReadyReplicas));
        Assert.False(Conditions.IsTrue(progressing.Status.Conditions, Conditions.Types.Ready));
        Assert.Equal(16, progressing.Status.Plan!.GpusPerReplica);

        // What the LWS controller reports once the group's pods are ready.
        var set = h.Api.Get<LeaderWorkerSet>("default", "big-inference");
        set.Status = new LeaderWorkerSetStatus { Replicas = 1, UpdatedReplicas = 1, ReadyReplicas = 1, ObservedGeneration = set.Metadata.Generation };
        h.Api.UpdateStatus(set);
        var ready = await h.WaitAsync<InferenceEndpoint>("big", e => Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready), "Ready from the LWS status");
        Assert.Equal((1, 1), (ready.Status!.ReadyReplicas, ready.Status.Group!.ReadyReplicas));
        var wide = await KubectlAsync(h, "get", "inferenceendpoint", "big", "-o", "wide");
        Assert.Contains("LeaderWorkerSet", wide, StringComparison.Ordinal);

        // One 8× H200 node holds the model: a Deployment replaces the group, which the operator deletes.
        var moved = h.Api.Get<InferenceEndpoint>("default", "big");
        moved.Spec = moved.Spec with { Budget = new BudgetSpec { AllowedGpuTypes = ["h200-141gb"] } };
        h.Api.Update(moved);
        await h.WaitAsync<V1Deployment>("big-inference", _ => true, "Deployment created");
        var deadline = DateTime.UtcNow + OperatorHarness.Patience;
        while (h.Api.TryGet<LeaderWorkerSet>("default", "big-inference") is not null && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.Null(h.Api.TryGet<LeaderWorkerSet>("default", "big-inference"));
        var service = h.Api.Get<V1Service>("default", "big-inference");
        Assert.False(service.Spec.Selector.ContainsKey(LeaderWorkerSet.WorkerIndexLabel));
    }

    [Fact]
    public async Task Does_report_leader_worker_set_not_installed_and_keep_the_operator_running()
    {
        await using var h = await OperatorHarness.StartAsync();
        h.Create(Endpoint("big", "a100-80gb"));

        var stalled = await h.WaitAsync<InferenceEndpoint>("big",
            e => e.Status?.Conditions?.Any(c => c.Type == Conditions.Types.Ready && c.Reason == StatusReasons.LeaderWorkerSetNotInstalled) == true, "LeaderWorkerSetNotInstalled");
        var ready = stalled.Status!.Conditions!.Single(c => c.Type == Conditions.Types.Ready);
        Assert.Equal("False", ready.Status);
        Assert.Contains("install LeaderWorkerSet", ready.Message, StringComparison.Ordinal);
        Assert.Null(h.Api.TryGet<V1Deployment>("default", "big-inference"));

        // The operator is up and serves other endpoints meanwhile.
        using var http = new HttpClient();
        var readyz = await http.GetAsync(new Uri(h.OperatorUrl, "/readyz"));
        Assert.True(readyz.IsSuccessStatusCode, $"/readyz answered {(int)readyz.StatusCode}");
    }

    private static async Task<string> KubectlAsync(OperatorHarness h, params string[] args)
    {
        var home = Directory.CreateTempSubdirectory("lowbit-kubectl-").FullName;
        try
        {
            var info = new ProcessStartInfo(Path.Combine(OperatorHarness.RepoRoot, ".tools", "bin", "kubectl"))
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            foreach (var arg in args.Concat(["--kubeconfig", h.Server.KubeconfigPath]))
            {
                info.ArgumentList.Add(arg);
            }

            info.Environment["HOME"] = home;
            using var process = Process.Start(info)!;
            var stdout = process.StandardOutput.ReadToEndAsync();
            var stderr = process.StandardError.ReadToEndAsync();
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await process.WaitForExitAsync(timeout.Token);
            Assert.True(process.ExitCode == 0, $"kubectl {string.Join(' ', args)} failed ({process.ExitCode}): {await stderr}");
            return await stdout;
        }
        finally
        {
            Directory.Delete(home, recursive: true);
        }
    }
}
