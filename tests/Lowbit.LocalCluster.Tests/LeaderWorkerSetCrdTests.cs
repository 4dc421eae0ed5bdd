using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Crds;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The shipped LeaderWorkerSet CRD, installed with the real kubectl and used as upstream's LWS examples use it.</summary>
public sealed class LeaderWorkerSetCrdTests : IClassFixture<ClusterFixture>
{
    private readonly ClusterFixture _cluster;

    public LeaderWorkerSetCrdTests(ClusterFixture cluster) => _cluster = cluster;

    private const string Sample = """
        apiVersion: leaderworkerset.x-k8s.io/v1
        kind: LeaderWorkerSet
        metadata:
          name: vllm
          namespace: default
        spec:
          replicas: 2
          leaderWorkerTemplate:
            size: 2
            leaderTemplate:
              metadata:
                labels:
                  role: leader
              spec:
                containers:
                - name: vllm-leader
                  image: vllm/vllm-openai@sha256:0000000000000000000000000000000000000000000000000000000000000000
                  command: ["sh", "-c", "ray start --head --port=6379 && vllm serve m --pipeline-parallel-size 2"]
            workerTemplate:
              spec:
                containers:
                - name: vllm-worker
                  image: vllm/vllm-openai@sha256:0000000000000000000000000000000000000000000000000000000000000000
                  command: ["sh", "-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"]
        """;

    [Fact]
    public async Task Does_serve_leader_worker_sets_with_upstream_defaults_printer_columns_and_scale()
    {
        var dir = Directory.CreateTempSubdirectory("lws-crd-").FullName;
        using var cleanup = new TempDirectory(dir);
        var crd = Path.Combine(dir, "lws.yaml");
        await File.WriteAllTextAsync(crd, ThirdPartyCrds.LeaderWorkerSetYaml);
        await _cluster.Kubectl("apply", "--server-side", "-f", crd);
        var sample = Path.Combine(Path.GetDirectoryName(crd)!, "sample.yaml");
        await File.WriteAllTextAsync(sample, Sample);

        await _cluster.Kubectl("apply", "-f", sample);

        var lws = JsonNode.Parse(await _cluster.Kubectl("get", "lws", "vllm", "-o", "json"))!;
        Assert.Equal("RecreateGroupOnPodRestart", (string?)lws["spec"]!["leaderWorkerTemplate"]!["restartPolicy"]);
        Assert.Equal("LeaderCreated", (string?)lws["spec"]!["startupPolicy"]);
        Assert.Equal("role", ((JsonObject)lws["spec"]!["leaderWorkerTemplate"]!["leaderTemplate"]!["metadata"]!["labels"]!).Single().Key);
        Assert.Contains("$(LWS_LEADER_ADDRESS)", (string)lws["spec"]!["leaderWorkerTemplate"]!["workerTemplate"]!["spec"]!["containers"]![0]!["command"]![2]!, StringComparison.Ordinal);
        var table = await _cluster.Kubectl("get", "leaderworkersets");
        Assert.Matches(@"NAME\s+READY\s+DESIRED\s+UP-TO-DATE\s+AGE", table);
        Assert.Matches(@"vllm\s+(<none>\s+)?2\s+", table);

        await _cluster.Kubectl("scale", "lws", "vllm", "--replicas=3");
        Assert.Equal("3", await _cluster.Kubectl("get", "lws", "vllm", "-o", "jsonpath={.spec.replicas}"));

        var bad = await _cluster.KubectlAsync("patch", "lws", "vllm", "--type=merge", "-p", """{"spec":{"leaderWorkerTemplate":{"restartPolicy":"Sometimes"}}}""");
        Assert.NotEqual(0, bad.ExitCode);
        Assert.Contains("restartPolicy", bad.StdErr, StringComparison.Ordinal);
    }

    private sealed class TempDirectory(string path) : IDisposable
    {
        public void Dispose() => Directory.Delete(path, recursive: true);
    }
}
