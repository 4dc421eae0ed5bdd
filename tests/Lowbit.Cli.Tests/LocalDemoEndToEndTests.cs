using System.ClientModel;
using System.ClientModel.Primitives;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography.X509Certificates;
using System.Text.Json;
using k8s;
using OpenAI;
using OpenAI.Chat;

namespace Lowbit.Cli.Tests;

/// <summary>
/// <c>make run</c> end to end through the real binaries: <c>lowbit local up --demo</c> (the embedded API server, the
/// operator, the local executor running <c>lowbit-engine</c> inspect, quantize, finetune and serve as processes, real
/// Prometheus), then the real <c>kubectl</c> reads the three resources' status, the official OpenAI client chats
/// through the endpoint's Service proxy, and the demo's summary gives the adapter's effect and Prometheus' answers.
/// The FineTuneJob trains fewer steps than the example (<c>--finetune-steps</c>) to keep CI short.
/// </summary>
[Collection(EngineProcesses.Name)]
public sealed class LocalDemoEndToEndTests
{
    private const int Steps = 60;
    private const string Namespace = "default";
    private static readonly TimeSpan DemoTimeout = TimeSpan.FromMinutes(20);

    [Fact]
    public async Task Local_up_demo_quantizes_trains_and_serves_for_real_and_Prometheus_scrapes_it()
    {
        var root = RepoPaths.Root();
        var engine = RepoPaths.Engine(root);
        Assert.True(File.Exists(engine), $"{engine} is missing: build the solution first (make test does)");
        var kubectl = Tool(root, "kubectl");
        Assert.True(kubectl is not null, "kubectl is not installed: run make tools");
        Assert.True(Tool(root, "prometheus") is not null, "prometheus is not installed: run make tools (apt package prometheus)");
        var state = Directory.CreateTempSubdirectory("lowbit-e2e-");
        var output = new ConcurrentQueue<string>();
        using var demo = StartDemo(root, engine, state.FullName, output);
        try
        {
            var finished = await WaitForLineAsync(demo, output, l => l.StartsWith("demo: done", StringComparison.Ordinal) || l.StartsWith("demo: not every", StringComparison.Ordinal));
            Assert.True(finished?.StartsWith("demo: done", StringComparison.Ordinal) == true,
                $"the demo did not finish well ({finished ?? "no end line"}); its output:\n{Tail(output)}");
            var kubeconfig = Path.Combine(state.FullName, "kubeconfig");

            // The three resources, as the real kubectl shows them.
            var quantized = Kubectl(kubectl!, kubeconfig, "get", "quantizedmodel", "tiny-llama-int4");
            AssertReady(quantized, "Succeeded");
            var quality = quantized.GetProperty("status").GetProperty("quality");
            var before = quality.GetProperty("perplexityBefore").GetDouble();
            var after = quality.GetProperty("perplexityAfter").GetDouble();
            Assert.InRange(before, 1.0, 20.0);
            Assert.InRange(after, before * 0.99, before * 1.2); // 4-bit HQQ at group 32: close to the 16-bit model
            var artifact = quantized.GetProperty("status").GetProperty("artifact");
            Assert.Equal("pvc://lowbit-models/quantized/tiny-llama-int4", artifact.GetProperty("uri").GetString());
            Assert.True(artifact.GetProperty("bytes").GetInt64() > 0);
            var exports = quantized.GetProperty("status").GetProperty("exports").EnumerateArray()
                .ToDictionary(e => e.GetProperty("format").GetString()!, e => e.GetProperty("uri").GetString());
            Assert.Equal("pvc://lowbit-models/quantized/tiny-llama-int4/lowbit", exports["lowbit"]);
            Assert.Equal("pvc://lowbit-models/quantized/tiny-llama-int4/gguf-q4_k/model-q4_k.gguf", exports["gguf-q4_k"]);

            var tuned = Kubectl(kubectl!, kubeconfig, "get", "finetunejob", "tiny-llama-lora");
            AssertReady(tuned, "Succeeded");
            var progress = tuned.GetProperty("status").GetProperty("progress");
            Assert.Equal(Steps, progress.GetProperty("step").GetInt64());
            Assert.Equal(Steps, progress.GetProperty("totalSteps").GetInt64());
            Assert.True(progress.GetProperty("tokensPerSecond").GetDouble() > 0);
            var adapter = tuned.GetProperty("status").GetProperty("artifact");
            Assert.Equal("peft-lora", adapter.GetProperty("format").GetString());
            Assert.Equal("pvc://lowbit-models/adapters/tiny-llama-lora", adapter.GetProperty("uri").GetString());
            Assert.True(adapter.GetProperty("bytes").GetInt64() > 0);

            var endpoint = Kubectl(kubectl!, kubeconfig, "get", "inferenceendpoint", "tiny-llama");
            AssertReady(endpoint, "Available");
            Assert.True(endpoint.GetProperty("status").GetProperty("cost").GetProperty("hourlyUsd").GetDouble() > 0);
            var url = new Uri(endpoint.GetProperty("status").GetProperty("url").GetString()!);
            var service = url.Host.Split('.')[0];

            // The answer, through the API server's Service proxy, with the official OpenAI client.
            var chat = ChatThroughServiceProxy(kubeconfig, service, "tiny-alpaca");
            var completion = (await chat.CompleteChatAsync([new UserChatMessage("Say hello.")],
                new ChatCompletionOptions { MaxOutputTokenCount = 16, Temperature = 0 })).Value;
            Assert.False(string.IsNullOrWhiteSpace(completion.Content[0].Text), "the endpoint answered an empty chat");
            Assert.InRange(completion.Usage.OutputTokenCount, 1, 16);

            // The demo's own measurements: the adapter's effect (log-likelihood of the training answers) and Prometheus.
            using var summary = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(state.FullName, "demo", "summary.json")));
            var s = summary.RootElement;
            Assert.False(string.IsNullOrWhiteSpace(s.GetProperty("chat").GetProperty("answer").GetString()));
            var effect = s.GetProperty("adapterEffect");
            var without = effect.GetProperty("perplexityWithout").GetDouble();
            var with = effect.GetProperty("perplexityWith").GetDouble();
            Assert.True(with < without * 0.9, $"the adapter should fit its training answers better: perplexity {without} without, {with} with");
            var prometheus = s.GetProperty("prometheus");
            Assert.True(prometheus.GetProperty("engineGenerationTokens").GetDouble() > 0, "Prometheus saw no generated tokens from the engine");
            Assert.True(prometheus.GetProperty("observedTokensPerSecond").GetDouble() > 0, "Prometheus saw no tokens/s from the operator's endpoint gauge");
            Assert.True(prometheus.GetProperty("observedTimeToFirstTokenSeconds").GetDouble() > 0, "Prometheus saw no time to first token");
            Assert.Equal(Steps, s.GetProperty("training").GetProperty("steps").GetInt64());
            Assert.Equal(before, s.GetProperty("quality").GetProperty("perplexity16Bit").GetDouble(), 6);
        }
        finally
        {
            await StopAsync(demo);
            try
            {
                state.Delete(recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static void AssertReady(JsonElement resource, string phase)
    {
        var status = resource.GetProperty("status");
        var name = resource.GetProperty("metadata").GetProperty("name").GetString();
        Assert.Equal(phase, status.GetProperty("phase").GetString());
        Assert.Equal(resource.GetProperty("metadata").GetProperty("generation").GetInt64(), status.GetProperty("observedGeneration").GetInt64());
        var ready = status.GetProperty("conditions").EnumerateArray().Single(c => c.GetProperty("type").GetString() == "Ready");
        Assert.True(ready.GetProperty("status").GetString() == "True", $"{name}: Ready is {ready}");
    }

    private static ChatClient ChatThroughServiceProxy(string kubeconfig, string service, string model)
    {
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig);
        var ca = config.SslCaCerts;
        var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
            {
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return cert is not null && chain.Build(cert);
            },
        };
        var options = new OpenAIClientOptions
        {
            Endpoint = new Uri($"{config.Host.TrimEnd('/')}/api/v1/namespaces/{Namespace}/services/{service}:http/proxy/v1"),
            Transport = new HttpClientPipelineTransport(new HttpClient(handler)),
            NetworkTimeout = TimeSpan.FromSeconds(60),
        };
        // The API server takes the kubeconfig's bearer token, which the OpenAI client sends as its API key.
        return new ChatClient(model, new ApiKeyCredential(config.AccessToken), options);
    }

    private static Process StartDemo(string root, string engine, string state, ConcurrentQueue<string> output)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = root,
        };
        foreach (var arg in new[]
        {
            "exec", Path.Combine(AppContext.BaseDirectory, "lowbit.dll"), "local", "up", "--demo", "--no-sweep",
            "--finetune-steps", Steps.ToString(System.Globalization.CultureInfo.InvariantCulture), "--state-dir", state, "--engine", engine,
        })
        {
            start.ArgumentList.Add(arg);
        }
        var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Keep(output, e.Data);
        process.ErrorDataReceived += (_, e) => Keep(output, e.Data);
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return process;
    }

    private static void Keep(ConcurrentQueue<string> output, string? line)
    {
        if (line is null)
        {
            return;
        }
        output.Enqueue(line);
        while (output.Count > 400 && output.TryDequeue(out _))
        {
        }
    }

    private static async Task<string?> WaitForLineAsync(Process process, ConcurrentQueue<string> output, Func<string, bool> match)
    {
        var deadline = Stopwatch.StartNew();
        while (deadline.Elapsed < DemoTimeout)
        {
            if (output.FirstOrDefault(match) is { } line)
            {
                return line;
            }
            if (process.HasExited)
            {
                await Task.Delay(200);
                return output.FirstOrDefault(match);
            }
            await Task.Delay(500);
        }
        return null;
    }

    private static async Task StopAsync(Process process)
    {
        if (process.HasExited)
        {
            return;
        }
        // SIGTERM first: the cluster stops its pods (the engine's servers) and saves its state; then force.
        using (var term = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await term.WaitForExitAsync();
        }
        using var grace = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        try
        {
            await process.WaitForExitAsync(grace.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
        }
    }

    private static JsonElement Kubectl(string kubectl, string kubeconfig, params string[] args)
    {
        var start = new ProcessStartInfo(kubectl) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in new[] { "--kubeconfig", kubeconfig, "-n", Namespace }.Concat(args).Concat(["-o", "json"]))
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        Assert.True(process.ExitCode == 0, $"kubectl {string.Join(' ', args)}: exit {process.ExitCode}: {stderr.Result}");
        return JsonDocument.Parse(stdout.Result).RootElement.Clone();
    }

    private static string Tail(ConcurrentQueue<string> output) => string.Join('\n', output.TakeLast(80));

    private static string? Tool(string root, string name) =>
        new[] { Path.Combine(root, ".tools", "bin") }
            .Concat((Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
            .Select(d => Path.Combine(d, name))
            .FirstOrDefault(File.Exists);
}
