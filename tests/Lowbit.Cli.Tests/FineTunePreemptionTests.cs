using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;

namespace Lowbit.Cli.Tests;

/// <summary>
/// A preempted fine-tune continues where it stopped (docs/finetune.md, <c>--resume-from latest</c>; reliability
/// "Training interrupted": tiny CPU model killed mid-run, the step count continues). Through the real binaries:
/// <c>lowbit local up</c> with its operator, a LoRA FineTuneJob on the tiny model executed as a <c>lowbit-engine</c>
/// process, evicted through the Eviction API after its first checkpoint (SIGTERM: the engine writes a checkpoint and
/// exits 143; the pod gets DisruptionTarget, which the Job's podFailurePolicy ignores), and the replacement pod the Job
/// controller creates from the same template resumes from that checkpoint and finishes the run.
/// </summary>
[Collection(EngineProcesses.Name)]
public sealed class FineTunePreemptionTests : IDisposable
{
    private const int Steps = 120;
    private const string Namespace = "default";
    private const string Name = "preempted";
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(10);

    private readonly string _state = Directory.CreateTempSubdirectory("lowbit-preempt-").FullName;
    private readonly ConcurrentQueue<string> _output = new();
    private Process? _up;

    public void Dispose()
    {
        if (_up is { HasExited: false })
        {
            _up.Kill(entireProcessTree: true);
            _up.WaitForExit(10_000);
        }
        _up?.Dispose();
        Directory.Delete(_state, recursive: true);
    }

    [Fact]
    public async Task Does_resume_an_evicted_finetune_pod_from_its_checkpoint_and_finish_the_run()
    {
        var client = await UpAsync();
        var dataset = KubernetesYaml.Deserialize<V1ConfigMap>(await File.ReadAllTextAsync(Path.Combine(RepoPaths.Root(), "examples", "local", "dataset-tiny-alpaca.yaml")));
        await client.CoreV1.CreateNamespacedConfigMapAsync(dataset, Namespace);
        await client.CustomObjects.CreateNamespacedCustomObjectAsync(FineTuneJob(), "lowbit.dev", "v1alpha1", Namespace, "finetunejobs");

        // Evict the pod once its log (what kubectl logs shows) announces its first checkpoint (saveSteps 5), mid-run; the
        // operator's status mirrors the log only every few seconds, which a fast run can outpace.
        var firstPod = await EventuallyAsync(async () =>
        {
            Unstalled((await GetJobAsync(client))?["status"]);
            var pods = await client.CoreV1.ListNamespacedPodAsync(Namespace, labelSelector: $"batch.kubernetes.io/job-name={Name}-finetune");
            var running = pods.Items.FirstOrDefault(p => p.Status?.Phase == "Running");
            if (running is null)
            {
                return null;
            }
            var log = await ReadLogAsync(client, running.Metadata.Name);
            return log.Contains("\"event\":\"checkpoint\"", StringComparison.Ordinal) && !log.Contains("\nfinetune: ", StringComparison.Ordinal) ? running : null;
        }, "a running fine-tune pod after its first checkpoint", () => DescribeAsync(client));
        await client.CoreV1.CreateNamespacedPodEvictionAsync(
            new V1Eviction { Metadata = new V1ObjectMeta { Name = firstPod.Metadata.Name, NamespaceProperty = Namespace } }, firstPod.Metadata.Name, Namespace);

        var done = await EventuallyAsync(async () =>
        {
            var job = await GetJobAsync(client);
            return (string?)job?["status"]?["phase"] is "Succeeded" or "Failed" ? job : null;
        }, "the FineTuneJob to finish", () => DescribeAsync(client));

        var status = done["status"]!;
        Assert.True((string?)status["phase"] == "Succeeded", $"FineTuneJob ended {status.ToJsonString()}");
        Assert.Equal(Steps, (long?)status["progress"]?["step"]);
        var pods = (await client.CoreV1.ListNamespacedPodAsync(Namespace, labelSelector: $"batch.kubernetes.io/job-name={Name}-finetune")).Items;
        var replacement = Assert.Single(pods, p => p.Metadata.Name != firstPod.Metadata.Name && p.Status?.Phase == "Succeeded");
        var log = await ReadLogAsync(client, replacement.Metadata.Name);
        var resumed = log.Split('\n').FirstOrDefault(l => l.Contains("resumed from step", StringComparison.Ordinal));
        Assert.True(resumed is not null, $"the replacement pod did not resume; its log:\n{Tail(log)}");
        var resumedStep = int.Parse(resumed!.Split("resumed from step ")[1].Split(' ')[0], System.Globalization.CultureInfo.InvariantCulture);
        Assert.InRange(resumedStep, 5, Steps - 1);
        // It trained only the steps after the checkpoint: its first train event is the next step.
        var firstTrain = log.Split('\n').First(l => l.Contains("\"event\":\"train\"", StringComparison.Ordinal));
        Assert.Equal(resumedStep + 1, (int)JsonNode.Parse(firstTrain)!["step"]!);
        Assert.Equal(FineTuneRequestArgs(firstPod), FineTuneRequestArgs(replacement));
        // The PVC source carries no architecture annotation: the operator read it with an inspect Job first.
        var inspect = (await client.CoreV1.ListNamespacedPodAsync(Namespace, labelSelector: $"batch.kubernetes.io/job-name={Name}-inspect")).Items;
        Assert.Contains(inspect, p => p.Status?.Phase == "Succeeded" && p.Spec.Containers[0].Args.Contains("inspect"));
    }

    /// <summary>Fails at once when the FineTuneJob stalled (a terminal error), instead of waiting out the timeout.</summary>
    private static JsonNode? Unstalled(JsonNode? status)
    {
        var stalled = status?["conditions"]?.AsArray().FirstOrDefault(c => (string?)c?["type"] == "Stalled" && (string?)c?["status"] == "True");
        Assert.True(stalled is null, $"the FineTuneJob stalled: {stalled?.ToJsonString()}");
        return status;
    }

    private static IList<string> FineTuneRequestArgs(V1Pod pod) => pod.Spec.Containers[0].Args;

    private static JsonObject FineTuneJob() => new()
    {
        ["apiVersion"] = "lowbit.dev/v1alpha1",
        ["kind"] = "FineTuneJob",
        ["metadata"] = new JsonObject { ["name"] = Name },
        ["spec"] = new JsonObject
        {
            ["baseModel"] = new JsonObject { ["source"] = new JsonObject { ["pvc"] = new JsonObject { ["claimName"] = "lowbit-models", ["path"] = "tiny-llama" } } },
            ["method"] = "lora",
            ["lora"] = new JsonObject { ["r"] = 8, ["alpha"] = 16, ["dropout"] = 0.05, ["targetModules"] = new JsonArray("q_proj", "v_proj", "down_proj") },
            ["dataset"] = new JsonObject
            {
                ["source"] = new JsonObject { ["configMap"] = new JsonObject { ["name"] = "tiny-alpaca", ["key"] = "train.jsonl" } },
                ["format"] = "chat",
            },
            ["training"] = new JsonObject
            {
                ["maxSteps"] = Steps, ["learningRate"] = 0.002, ["microBatchSize"] = 2, ["gradientAccumulation"] = 1, ["sequenceLength"] = 128,
                ["evalSplit"] = 0, ["saveSteps"] = 5, ["seed"] = 7,
            },
            ["output"] = new JsonObject { ["pvc"] = new JsonObject { ["claimName"] = "lowbit-models", ["path"] = $"adapters/{Name}" } },
            ["resources"] = new JsonObject { ["cpu"] = "1", ["memory"] = "1Gi" },
            ["scheduling"] = new JsonObject { ["timeout"] = "2m", ["allowedGpuTypes"] = new JsonArray("cpu") },
        },
    };

    private static async Task<JsonObject?> GetJobAsync(Kubernetes client)
    {
        try
        {
            return await client.CustomObjects.GetNamespacedCustomObjectAsync<JsonObject>("lowbit.dev", "v1alpha1", Namespace, "finetunejobs", Name);
        }
        catch (k8s.Autorest.HttpOperationException)
        {
            return null;
        }
    }

    private static async Task<string> ReadLogAsync(Kubernetes client, string pod)
    {
        using var stream = await client.CoreV1.ReadNamespacedPodLogAsync(pod, Namespace);
        using var reader = new StreamReader(stream);
        return await reader.ReadToEndAsync();
    }

    private async Task<Kubernetes> UpAsync()
    {
        var root = RepoPaths.Root();
        var engine = RepoPaths.Engine(root);
        Assert.True(File.Exists(engine), $"{engine} is missing: build the solution first (make test does)");
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = root,
        };
        foreach (var arg in new[] { "exec", Path.Combine(AppContext.BaseDirectory, "lowbit.dll"), "local", "up", "--state-dir", _state, "--engine", engine })
        {
            start.ArgumentList.Add(arg);
        }
        _up = new Process { StartInfo = start };
        var ready = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        _up.OutputDataReceived += (_, e) =>
        {
            if (e.Data is { } line)
            {
                Keep(line);
                if (line.StartsWith("ready: kubeconfig=", StringComparison.Ordinal))
                {
                    ready.TrySetResult(line["ready: kubeconfig=".Length..]);
                }
            }
        };
        _up.ErrorDataReceived += (_, e) => Keep(e.Data);
        _up.Exited += (_, _) => ready.TrySetException(new InvalidOperationException($"lowbit local up exited before it was ready:\n{string.Join('\n', _output)}"));
        _up.EnableRaisingEvents = true;
        _up.Start();
        _up.BeginOutputReadLine();
        _up.BeginErrorReadLine();
        var kubeconfig = await ready.Task.WaitAsync(TimeSpan.FromSeconds(120));
        return new Kubernetes(KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig));
    }

    private void Keep(string? line)
    {
        if (line is null)
        {
            return;
        }
        _output.Enqueue(line);
        while (_output.Count > 200 && _output.TryDequeue(out _))
        {
        }
    }

    private async Task<T> EventuallyAsync<T>(Func<Task<T?>> probe, string what, Func<Task<string>>? describe = null)
        where T : class
    {
        var watch = Stopwatch.StartNew();
        while (watch.Elapsed < Timeout)
        {
            if (await probe() is { } value)
            {
                return value;
            }
            await Task.Delay(250);
        }
        var state = describe is null ? "" : await describe();
        throw new TimeoutException($"{what}: not seen within {Timeout.TotalMinutes} min; {state}\nlowbit local up said:\n{string.Join('\n', _output)}");
    }

    /// <summary>The FineTuneJob's status, its Job's pods (phase, conditions, exit) and each pod's last log lines: what a timeout needs to be read.</summary>
    private static async Task<string> DescribeAsync(Kubernetes client)
    {
        var text = new System.Text.StringBuilder();
        text.Append("FineTuneJob status: ").AppendLine((await GetJobAsync(client))?["status"]?.ToJsonString() ?? "(none)");
        foreach (var pod in (await client.CoreV1.ListNamespacedPodAsync(Namespace)).Items)
        {
            text.Append("pod ").Append(pod.Metadata.Name).Append(' ').Append(pod.Status?.Phase).Append(' ')
                .Append(string.Join(",", pod.Status?.Conditions?.Select(c => $"{c.Type}={c.Status}{(c.Reason is null ? "" : "/" + c.Reason)}") ?? []))
                .Append(' ').AppendLine(k8s.KubernetesJson.Serialize(pod.Status?.ContainerStatuses?.FirstOrDefault()?.State));
            try
            {
                text.AppendLine(Tail(await ReadLogAsync(client, pod.Metadata.Name)));
            }
            catch (k8s.Autorest.HttpOperationException)
            {
            }
        }
        return text.ToString();
    }

    private static string Tail(string text) => string.Join('\n', text.Split('\n').TakeLast(30));
}

/// <summary>
/// Tests that run <c>lowbit local up</c> with real engine processes take turns: side by side on a 2-core CI box their
/// engines (each with as many libtorch threads as cores) starve each other (a 200-step tiny fine-tune went from 0.2 to
/// over 1 s per step).
/// </summary>
[CollectionDefinition(Name)]
public sealed class EngineProcesses
{
    public const string Name = "engine processes";
}
