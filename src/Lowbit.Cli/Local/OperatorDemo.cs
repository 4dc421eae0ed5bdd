using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json.Nodes;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Spectre.Console;

namespace Lowbit.Cli.Local;

/// <summary>Settings of <c>lowbit local up --demo</c>.</summary>
public sealed record DemoOptions
{
    public required string RepoRoot { get; init; }

    /// <summary>Where the demo writes Prometheus' data, the sweep's models and the chart.</summary>
    public required string WorkDirectory { get; init; }

    public required string EnginePath { get; init; }

    /// <summary>The executor's claim folders (<c>&lt;dir&gt;/&lt;namespace&gt;/&lt;claim&gt;</c>), to reach the artifacts the pods wrote.</summary>
    public required string ClaimsDirectory { get; init; }

    public string Namespace { get; init; } = "default";

    public TimeSpan Timeout { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>A live table (a terminal) or plain lines (a pipe, a CI log).</summary>
    public bool Live { get; init; }

    /// <summary>Run the quantization sweep and write the perplexity chart.</summary>
    public bool Sweep { get; init; } = true;

    /// <summary>Overrides the example FineTuneJob's <c>spec.training.maxSteps</c> (quicker runs).</summary>
    public int? FineTuneSteps { get; init; }

    /// <summary>Start Prometheus (when its executable is found).</summary>
    public bool Prometheus { get; init; } = true;
}

/// <summary>
/// <c>make run</c>'s demo, once the local cluster and its operator run: applies <c>examples/local/</c> (the tiny model
/// quantized, a QLoRA adapter trained on it, the endpoint serving both — every engine verb for real, nothing
/// simulated), follows them, sends a chat completion through the endpoint's Service (the API server's service proxy),
/// has a real Prometheus scrape the operator and the engine, sweeps quantization methods for a perplexity chart, and
/// prints a summary table and where to look next.
/// </summary>
public static class OperatorDemo
{
    public static async Task<int> RunAsync(string kubeconfig, LocalOperator op, DemoOptions options, IAnsiConsole console, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(op);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(console);
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig);
        using var client = new Kubernetes(config);
        var objects = await ApplyExamplesAsync(client, Path.Combine(options.RepoRoot, "examples", "local"), options, cancellationToken).ConfigureAwait(false);
        console.WriteLine($"demo: applied examples/local to namespace {options.Namespace}: {string.Join(", ", objects.Select(o => $"{o.Kind}/{o.Name}"))}");
        console.WriteLine("demo: every step runs for real on this machine's CPU (lowbit-engine inspect, quantize, finetune, serve)");

        var states = await ProgressView.FollowAsync(client, objects, console, options.Live, options.Timeout, TimeProvider.System, cancellationToken).ConfigureAwait(false);
        if (states.Count == 0 || !states.All(s => s.IsReady))
        {
            foreach (var s in states.Where(s => !s.IsReady))
            {
                console.WriteLine($"demo: not Ready: {s.Line}");
            }
            return 1;
        }
        console.WriteLine("demo: every example is Ready");

        var endpoint = objects.First(o => o.Kind == InferenceEndpoint.KindName);
        var summary = new Summary();
        await ReadStatusesAsync(client, objects, summary, cancellationToken).ConfigureAwait(false);
        using var http = ClusterHttp(config);
        var service = await FindServiceAsync(client, endpoint, cancellationToken).ConfigureAwait(false);
        var chatUrl = new Uri($"{config.Host.TrimEnd('/')}/api/v1/namespaces/{endpoint.Namespace}/services/{service}:http/proxy/v1/chat/completions");
        var model = await FirstAdapterOrModelAsync(client, endpoint, cancellationToken).ConfigureAwait(false);
        // Ready can be a restored status (a second `make run` restores the cluster's state while the endpoint's pod
        // starts again): wait until the Service answers, as a client would, before traffic and Prometheus targets.
        await WaitServingAsync(http, new Uri(chatUrl.AbsoluteUri.Replace("/v1/chat/completions", "/v1/models", StringComparison.Ordinal)), console, options.Timeout, cancellationToken).ConfigureAwait(false);

        await using var prometheus = options.Prometheus && PrometheusProcess.Find(options.RepoRoot) is { } promExe
            ? await PrometheusProcess.StartAsync(promExe, Path.Combine(options.WorkDirectory, "prometheus"), op.MetricsUrl, cancellationToken).ConfigureAwait(false)
            : null;
        if (prometheus is not null)
        {
            var targets = await EngineTargetsAsync(client, endpoint.Namespace, service, cancellationToken).ConfigureAwait(false);
            await prometheus.SetEngineTargetsAsync(targets, new Dictionary<string, string> { ["endpoint"] = endpoint.Name }, cancellationToken).ConfigureAwait(false);
        }

        var (answer, usage) = await ChatAsync(http, chatUrl, model, "Say hello.", cancellationToken).ConfigureAwait(false);
        console.WriteLine($"demo: POST {chatUrl}");
        console.WriteLine($"demo: model {model} answered: {answer.Trim()} ({usage} tokens)");
        summary.Model = model;
        summary.Answer = answer.Trim();
        summary.AnswerTokens = usage;
        // A little traffic over a few scrape intervals, so the operator's scraper sees tokens/s and TTFT move.
        for (var i = 0; i < 6; i++)
        {
            await ChatAsync(http, chatUrl, model, i % 2 == 0 ? "Name a colour." : "Add the numbers 2 and 3.", cancellationToken).ConfigureAwait(false);
            await Task.Delay(700, cancellationToken).ConfigureAwait(false);
        }

        (summary.AdapterEffect, summary.PerplexityAdapted) = await AdapterEffectAsync(client, objects, options, cancellationToken).ConfigureAwait(false);
        if (summary.AdapterEffect is { } effect)
        {
            console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"demo: adapter effect on the training conversations (lowbit-engine eval): perplexity {effect.Base:0.000} without, {effect.Adapted:0.000} with the adapter"));
        }

        if (prometheus is not null)
        {
            // Keep a little traffic going while waiting: the operator's scraper needs token growth between two samples.
            using var traffic = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var load = Task.Run(async () =>
            {
                while (!traffic.IsCancellationRequested)
                {
                    await ChatAsync(http, chatUrl, model, "Say goodbye.", traffic.Token).ConfigureAwait(false);
                    await Task.Delay(500, traffic.Token).ConfigureAwait(false);
                }
            }, CancellationToken.None);
            summary.EngineTokens = await prometheus.WaitForAsync($"sum({Engine.Protocol.EngineMetricNames.GenerationTokensTotal})", v => v > 0,
                TimeSpan.FromSeconds(20), cancellationToken).ConfigureAwait(false);
            summary.ObservedTokensPerSecond = await prometheus.WaitForAsync($"max(lowbit_endpoint_tokens_per_second{{endpoint=\"{endpoint.Name}\"}})", v => v > 0,
                TimeSpan.FromSeconds(20), cancellationToken).ConfigureAwait(false);
            // The gauge is the mean over a scrape interval in which requests got their first token: an interval that saw
            // only decode steps leaves it unset, so wait for one (the traffic above keeps starting requests).
            summary.ObservedTtftSeconds = await prometheus.WaitForAsync($"max(lowbit_endpoint_time_to_first_token_seconds{{endpoint=\"{endpoint.Name}\"}})", v => v > 0,
                TimeSpan.FromSeconds(20), cancellationToken).ConfigureAwait(false);
            summary.ObservedUsdPerMillion = await prometheus.QueryAsync($"max(lowbit_endpoint_usd_per_million_tokens{{endpoint=\"{endpoint.Name}\"}})", cancellationToken)
                .ConfigureAwait(false);
            await traffic.CancelAsync().ConfigureAwait(false);
            try
            {
                await load.ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
            }
        }

        string? chart = null;
        if (options.Sweep)
        {
            console.WriteLine("demo: quantization sweep on the tiny model (rtn and hqq at 2, 3, 4 bits; rtn 8): lowbit-engine quantize, two at a time");
            var sweep = await QualitySweep.RunAsync(options.EnginePath, Path.Combine(options.RepoRoot, "tests", "fixtures", "tiny-llama"),
                Path.Combine(options.WorkDirectory, "sweep"), QualitySweep.DefaultGrid, console.WriteLine, cancellationToken).ConfigureAwait(false);
            if (sweep.Points.Count > 0)
            {
                chart = Path.Combine(options.WorkDirectory, "perplexity-vs-bits.png");
                QualityChart.Write(chart, sweep.Points, sweep.BaselinePerplexity, "tiny-llama");
            }
            foreach (var failure in sweep.Failures)
            {
                console.WriteLine($"demo: sweep run failed: {failure}");
            }
        }

        console.Write(summary.ToTable());
        var summaryFile = Path.Combine(options.WorkDirectory, "summary.json");
        Directory.CreateDirectory(options.WorkDirectory);
        await File.WriteAllTextAsync(summaryFile, summary.ToJson(chart).ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }),
            cancellationToken).ConfigureAwait(false);
        console.WriteLine($"summary: {summaryFile}");
        if (chart is not null)
        {
            console.WriteLine($"chart: {chart}");
        }
        console.WriteLine($"next: kubectl --kubeconfig {kubeconfig} get lowbit");
        console.WriteLine($"next: curl -sk -H \"Authorization: Bearer $(kubectl --kubeconfig {kubeconfig} config view --raw -o jsonpath='{{.users[0].user.token}}')\" " +
            $"-H 'Content-Type: application/json' {chatUrl} -d '{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Say hello.\"}}]}}'");
        if (prometheus is not null)
        {
            console.WriteLine($"next: Prometheus at {prometheus.Url} (query lowbit_endpoint_tokens_per_second); it stops with the demo");
        }
        return 0;
    }

    private static async Task<List<FollowedObject>> ApplyExamplesAsync(Kubernetes client, string folder, DemoOptions options, CancellationToken cancellationToken)
    {
        var ns = options.Namespace;
        var applied = new List<FollowedObject>();
        foreach (var file in Directory.GetFiles(folder, "*.yaml").Order(StringComparer.Ordinal))
        {
            var text = await File.ReadAllTextAsync(file, cancellationToken).ConfigureAwait(false);
            // As written (YAML → JSON), like `kubectl apply --server-side`: nothing is dropped or re-defaulted on the client.
            var obj = Lowbit.Schema.Yaml.ParseObject(text);
            var kind = (string?)obj["kind"];
            var name = (string?)obj["metadata"]?["name"] ?? throw new InvalidOperationException($"{file}: manifest without metadata.name");
            var plural = kind switch
            {
                QuantizedModel.KindName => QuantizedModel.Plural,
                FineTuneJob.KindName => FineTuneJob.Plural,
                InferenceEndpoint.KindName => InferenceEndpoint.Plural,
                _ => null,
            };
            if (kind == "ConfigMap")
            {
                var cm = KubernetesYaml.Deserialize<V1ConfigMap>(text);
                await client.CoreV1.PatchNamespacedConfigMapAsync(new V1Patch(cm, V1Patch.PatchType.ApplyPatch), name, ns,
                    fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
            }
            else if (plural is not null)
            {
                if (kind == FineTuneJob.KindName && options.FineTuneSteps is { } steps && obj["spec"]?["training"] is JsonObject training)
                {
                    training["maxSteps"] = steps;
                }
                await client.CustomObjects.PatchNamespacedCustomObjectAsync(new V1Patch(obj.ToJsonString(), V1Patch.PatchType.ApplyPatch), ApiGroup.Group,
                    ApiGroup.Version, ns, plural, name, fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
                applied.Add(new FollowedObject(kind!, plural, ns, name));
            }
        }
        return applied;
    }

    private static async Task ReadStatusesAsync(Kubernetes client, IReadOnlyList<FollowedObject> objects, Summary summary, CancellationToken cancellationToken)
    {
        foreach (var o in objects)
        {
            var status = (await client.CustomObjects.GetNamespacedCustomObjectAsync<JsonObject>(ApiGroup.Group, ApiGroup.Version, o.Namespace, o.Plural, o.Name,
                cancellationToken).ConfigureAwait(false))?["status"];
            switch (o.Kind)
            {
                case QuantizedModel.KindName:
                    summary.PerplexityBefore = JsonNumbers.Double(status?["quality"]?["perplexityBefore"]);
                    summary.PerplexityQuantized = JsonNumbers.Double(status?["quality"]?["perplexityAfter"]);
                    summary.QuantizedBytes = JsonNumbers.Long(status?["artifact"]?["bytes"]);
                    summary.BitsPerWeight = JsonNumbers.Double(status?["artifact"]?["bitsPerWeight"]);
                    break;
                case FineTuneJob.KindName:
                    summary.TrainingTokensPerSecond = JsonNumbers.Double(status?["progress"]?["tokensPerSecond"]);
                    summary.TrainingLoss = JsonNumbers.Double(status?["progress"]?["loss"]);
                    summary.TrainingSteps = JsonNumbers.Long(status?["progress"]?["step"]);
                    summary.HeldOutSplitPerplexity = JsonNumbers.Double(status?["evaluation"]?["perplexity"]);
                    summary.AdapterBytes = JsonNumbers.Long(status?["artifact"]?["bytes"]);
                    break;
                case InferenceEndpoint.KindName:
                    summary.HourlyUsd = JsonNumbers.Double(status?["cost"]?["hourlyUsd"]);
                    summary.EstimatedUsdPerMillion = JsonNumbers.Double(status?["cost"]?["usdPerMillionTokens"]);
                    summary.Url = (string?)status?["url"];
                    break;
            }
        }
    }

    /// <summary>
    /// Perplexity of the training conversations (ChatML, as trained) under the quantized model, without and with the
    /// trained adapter, scored by <c>lowbit-engine eval</c> on the artifacts the pods wrote into the claim; and the
    /// perplexity of the model's held-out text with the adapter (what fine-tuning cost on general text).
    /// </summary>
    private static async Task<((double Base, double Adapted)? Effect, double? HeldOut)> AdapterEffectAsync(Kubernetes client, IReadOnlyList<FollowedObject> objects, DemoOptions options,
        CancellationToken cancellationToken)
    {
        string? Artifact(JsonObject? obj) => (string?)obj?["status"]?["artifact"]?["uri"];
        var quantized = objects.First(o => o.Kind == QuantizedModel.KindName);
        var tuned = objects.First(o => o.Kind == FineTuneJob.KindName);
        // The lowbit export of the QuantizedModel (status.exports names each format's folder).
        var lowbit = (await GetAsync(client, quantized, cancellationToken).ConfigureAwait(false))?["status"]?["exports"]?.AsArray()
            .FirstOrDefault(e => (string?)e?["format"] == "lowbit")?["uri"];
        var model = LocalPath((string?)lowbit, quantized.Namespace, options.ClaimsDirectory);
        var tunedObject = await GetAsync(client, tuned, cancellationToken).ConfigureAwait(false);
        // The adapter is written to spec.output; status.artifact names it once the operator reports it.
        var output = tunedObject?["spec"]?["output"]?["pvc"];
        var adapter = LocalPath(Artifact(tunedObject), tuned.Namespace, options.ClaimsDirectory)
            ?? LocalPath($"pvc://{(string?)output?["claimName"]}/{(string?)output?["path"]}", tuned.Namespace, options.ClaimsDirectory);
        if (model is null || adapter is null)
        {
            return (null, null);
        }
        var configMap = await client.CoreV1.ReadNamespacedConfigMapAsync("tiny-alpaca", tuned.Namespace, cancellationToken: cancellationToken).ConfigureAwait(false);
        var text = new StringBuilder();
        foreach (var line in (configMap.Data is { } data && data.TryGetValue("train.jsonl", out var lines) ? lines : "").Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (var message in JsonNode.Parse(line)?["messages"]?.AsArray() ?? [])
            {
                text.Append(ChatMl((string?)message?["role"] ?? "", (string?)message?["content"] ?? ""));
            }
        }
        var textFile = Path.Combine(options.WorkDirectory, "train-examples.txt");
        Directory.CreateDirectory(options.WorkDirectory);
        await File.WriteAllTextAsync(textFile, text.ToString(), cancellationToken).ConfigureAwait(false);
        var without = await EngineRunner.EvalAsync(options.EnginePath, model, null, textFile, cancellationToken).ConfigureAwait(false);
        var with = await EngineRunner.EvalAsync(options.EnginePath, model, adapter, textFile, cancellationToken).ConfigureAwait(false);
        var heldOutText = Path.Combine(options.WorkDirectory, "held-out.txt");
        File.Copy(Path.Combine(options.RepoRoot, "tests", "fixtures", "tiny-llama", "eval.txt"), heldOutText, overwrite: true);
        var heldOut = await EngineRunner.EvalAsync(options.EnginePath, model, adapter, heldOutText, cancellationToken).ConfigureAwait(false);
        return (without is { } b && with is { } a ? (b, a) : null, heldOut);
    }

    /// <summary>One ChatML turn, as the engine renders chat datasets and chat requests for a model without a chat template.</summary>
    public static string ChatMl(string role, string content) => $"<|im_start|>{role}\n{content}<|im_end|>\n";

    /// <summary><c>pvc://claim/path</c> (as the engine reports artifacts) → the executor's local folder for that claim.</summary>
    public static string? LocalPath(string? uri, string ns, string claimsDirectory)
    {
        if (uri is null || !uri.StartsWith("pvc://", StringComparison.Ordinal))
        {
            return uri is not null && Directory.Exists(uri) ? uri : null;
        }
        var rest = uri["pvc://".Length..];
        var slash = rest.IndexOf('/', StringComparison.Ordinal);
        var (claim, path) = slash < 0 ? (rest, "") : (rest[..slash], rest[(slash + 1)..]);
        var local = Path.Combine(claimsDirectory, ns, claim, path);
        return Directory.Exists(local) ? local : null;
    }

    private static Task<JsonObject?> GetAsync(Kubernetes client, FollowedObject o, CancellationToken cancellationToken) =>
        client.CustomObjects.GetNamespacedCustomObjectAsync<JsonObject?>(ApiGroup.Group, ApiGroup.Version, o.Namespace, o.Plural, o.Name, cancellationToken);

    private static async Task<string> FindServiceAsync(Kubernetes client, FollowedObject endpoint, CancellationToken cancellationToken)
    {
        var services = await client.CoreV1.ListNamespacedServiceAsync(endpoint.Namespace,
            labelSelector: $"{Labels.OwnerKey(InferenceEndpoint.KindName)}={endpoint.Name}", cancellationToken: cancellationToken).ConfigureAwait(false);
        return services.Items.FirstOrDefault()?.Metadata.Name
            ?? throw new InvalidOperationException($"no Service labelled {Labels.OwnerKey(InferenceEndpoint.KindName)}={endpoint.Name} in {endpoint.Namespace}");
    }

    private static async Task<string> FirstAdapterOrModelAsync(Kubernetes client, FollowedObject endpoint, CancellationToken cancellationToken)
    {
        var obj = await client.CustomObjects.GetNamespacedCustomObjectAsync<JsonObject>(ApiGroup.Group, ApiGroup.Version, endpoint.Namespace,
            endpoint.Plural, endpoint.Name, cancellationToken).ConfigureAwait(false);
        return (string?)obj?["spec"]?["adapters"]?[0]?["name"] ?? (string?)obj?["spec"]?["servedModelName"] ?? endpoint.Name;
    }

    private static async Task<List<string>> EngineTargetsAsync(Kubernetes client, string ns, string service, CancellationToken cancellationToken)
    {
        var endpoints = await client.CoreV1.ReadNamespacedEndpointsAsync(service, ns, cancellationToken: cancellationToken).ConfigureAwait(false);
        return (endpoints.Subsets ?? [])
            .SelectMany(s => (s.Addresses ?? []).SelectMany(a => (s.Ports ?? []).Where(p => p.Name == "http").Select(p => $"{a.Ip}:{p.Port}")))
            .ToList();
    }

    /// <summary>An HttpClient that talks to the local API server as the kubeconfig's user (its CA, its bearer token).</summary>
    private static HttpClient ClusterHttp(KubernetesClientConfiguration config)
    {
        var ca = config.SslCaCerts;
        var handler = new HttpClientHandler
        {
            ServerCertificateCustomValidationCallback = (_, cert, _, _) =>
            {
                if (cert is null || ca is null)
                {
                    return false;
                }
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.AddRange(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(cert);
            },
        };
        var http = new HttpClient(handler) { Timeout = TimeSpan.FromMinutes(2) };
        if (config.AccessToken is { Length: > 0 } token)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        return http;
    }

    /// <summary>Polls <paramref name="modelsUrl"/> (<c>GET /v1/models</c> through the service proxy) until it answers 200, or fails naming the last answer.</summary>
    private static async Task WaitServingAsync(HttpClient http, Uri modelsUrl, IAnsiConsole console, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var watch = System.Diagnostics.Stopwatch.StartNew();
        var said = false;
        while (true)
        {
            string last;
            try
            {
                using var response = await http.GetAsync(modelsUrl, cancellationToken).ConfigureAwait(false);
                if (response.IsSuccessStatusCode)
                {
                    if (said)
                    {
                        console.WriteLine($"demo: {modelsUrl} answers after {watch.Elapsed.TotalSeconds:F0} s");
                    }
                    return;
                }
                var body = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
                last = $"{(int)response.StatusCode}: {body[..Math.Min(body.Length, 200)]}";
            }
            catch (HttpRequestException ex)
            {
                last = ex.Message;
            }
            if (watch.Elapsed > timeout)
            {
                throw new InvalidOperationException($"{modelsUrl} did not answer within {timeout.TotalSeconds:F0} s; last answer {last}");
            }
            if (!said)
            {
                console.WriteLine($"demo: waiting for the endpoint's pods to serve ({last})");
                said = true;
            }
            await Task.Delay(TimeSpan.FromMilliseconds(500), cancellationToken).ConfigureAwait(false);
        }
    }

    private static async Task<(string Answer, long Tokens)> ChatAsync(HttpClient http, Uri url, string model, string prompt, CancellationToken cancellationToken)
    {
        var body = new JsonObject
        {
            ["model"] = model,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = prompt }),
            ["max_tokens"] = 24,
            ["temperature"] = 0,
        };
        using var content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        using var response = await http.PostAsync(url, content, cancellationToken).ConfigureAwait(false);
        var text = await response.Content.ReadAsStringAsync(cancellationToken).ConfigureAwait(false);
        if (!response.IsSuccessStatusCode)
        {
            throw new InvalidOperationException($"chat completion through {url} answered {(int)response.StatusCode}: {text}");
        }
        var json = JsonNode.Parse(text);
        return ((string?)json?["choices"]?[0]?["message"]?["content"] ?? "", JsonNumbers.Long(json?["usage"]?["total_tokens"]) ?? 0);
    }

    /// <summary>The numbers the demo ends with, from the objects' status and from Prometheus.</summary>
    private sealed class Summary
    {
        public double? PerplexityBefore { get; set; }
        public double? PerplexityQuantized { get; set; }
        public double? PerplexityAdapted { get; set; }
        public double? HeldOutSplitPerplexity { get; set; }
        public string? Model { get; set; }
        public string? Answer { get; set; }
        public long? AnswerTokens { get; set; }
        public long? QuantizedBytes { get; set; }
        public double? BitsPerWeight { get; set; }
        public long? AdapterBytes { get; set; }
        public double? TrainingTokensPerSecond { get; set; }
        public double? TrainingLoss { get; set; }
        public long? TrainingSteps { get; set; }
        public double? HourlyUsd { get; set; }
        public double? EstimatedUsdPerMillion { get; set; }
        public string? Url { get; set; }
        public double? EngineTokens { get; set; }
        public double? ObservedTokensPerSecond { get; set; }
        public double? ObservedTtftSeconds { get; set; }
        public double? ObservedUsdPerMillion { get; set; }
        public (double Base, double Adapted)? AdapterEffect { get; set; }

        public Table ToTable()
        {
            var table = new Table().Title("demo summary").AddColumns("what", "value", "from");
            void Row(string what, string? value, string from) => table.AddRow(Markup.Escape(what), Markup.Escape(value ?? "n/a"), Markup.Escape(from));
            static string? F(double? v, string format) => v?.ToString(format, CultureInfo.InvariantCulture);
            Row("perplexity, 16-bit", F(PerplexityBefore, "0.000"), "QuantizedModel status.quality");
            Row("perplexity, quantized", F(PerplexityQuantized, "0.000") + (BitsPerWeight is { } b ? string.Create(CultureInfo.InvariantCulture, $" at {b:0.00} bits/weight") : ""), "QuantizedModel status.quality");
            Row("perplexity, quantized + adapter", F(PerplexityAdapted, "0.000"), "lowbit-engine eval --adapter (same held-out text)");
            if (HeldOutSplitPerplexity is { } heldOut)
            {
                Row("perplexity on the dataset's held-out split", F(heldOut, "0.000"), "FineTuneJob status.evaluation");
            }
            Row("perplexity on the training conversations, without → with adapter", AdapterEffect is { } e
                ? string.Create(CultureInfo.InvariantCulture, $"{e.Base:0.000} → {e.Adapted:0.000}") : null, "lowbit-engine eval --adapter");
            Row("quantized model size", QuantizedBytes is { } q ? string.Create(CultureInfo.InvariantCulture, $"{q / 1024.0:0} KiB") : null, "QuantizedModel status.artifact");
            Row("adapter size", AdapterBytes is { } a ? string.Create(CultureInfo.InvariantCulture, $"{a / 1024.0:0} KiB") : null, "FineTuneJob status.artifact");
            Row("training", TrainingSteps is { } s ? string.Create(CultureInfo.InvariantCulture, $"{s} steps, loss {TrainingLoss:0.000}, {TrainingTokensPerSecond:0} tokens/s") : null, "FineTuneJob status.progress");
            Row("tokens generated (engine counter)", F(EngineTokens, "0"), "Prometheus: lowbit:generation_tokens_total");
            Row("observed tokens/s", F(ObservedTokensPerSecond, "0.0"), "Prometheus: lowbit_endpoint_tokens_per_second");
            Row("observed time to first token", ObservedTtftSeconds is { } t ? string.Create(CultureInfo.InvariantCulture, $"{t * 1000:0} ms") : null, "Prometheus: lowbit_endpoint_time_to_first_token_seconds");
            Row("USD/hour", F(HourlyUsd, "0.000"), "InferenceEndpoint status.cost (planner)");
            Row("USD per 1M tokens (estimate)", F(EstimatedUsdPerMillion, "0.00"), "InferenceEndpoint status.cost (planner)");
            Row("USD per 1M tokens (observed)", F(ObservedUsdPerMillion, "0.00"), "Prometheus: lowbit_endpoint_usd_per_million_tokens");
            Row("endpoint URL (in cluster)", Url, "InferenceEndpoint status.url");
            return table;
        }

        /// <summary>The same numbers for scripts and the end-to-end test (<c>&lt;work dir&gt;/summary.json</c>).</summary>
        public JsonObject ToJson(string? chart)
        {
            static JsonNode? N(double? v) => v is { } d && double.IsFinite(d) ? JsonValue.Create(d) : null;
            return new JsonObject
            {
                ["chat"] = new JsonObject { ["model"] = Model, ["answer"] = Answer, ["totalTokens"] = AnswerTokens },
                ["quality"] = new JsonObject
                {
                    ["perplexity16Bit"] = N(PerplexityBefore),
                    ["perplexityQuantized"] = N(PerplexityQuantized),
                    ["perplexityQuantizedWithAdapter"] = N(PerplexityAdapted),
                    ["perplexityHeldOutSplit"] = N(HeldOutSplitPerplexity),
                    ["bitsPerWeight"] = N(BitsPerWeight),
                },
                ["adapterEffect"] = AdapterEffect is { } e ? new JsonObject { ["perplexityWithout"] = e.Base, ["perplexityWith"] = e.Adapted } : null,
                ["artifacts"] = new JsonObject { ["quantizedBytes"] = QuantizedBytes, ["adapterBytes"] = AdapterBytes },
                ["training"] = new JsonObject { ["steps"] = TrainingSteps, ["loss"] = N(TrainingLoss), ["tokensPerSecond"] = N(TrainingTokensPerSecond) },
                ["prometheus"] = new JsonObject
                {
                    ["engineGenerationTokens"] = N(EngineTokens),
                    ["observedTokensPerSecond"] = N(ObservedTokensPerSecond),
                    ["observedTimeToFirstTokenSeconds"] = N(ObservedTtftSeconds),
                    ["observedUsdPerMillionTokens"] = N(ObservedUsdPerMillion),
                },
                ["cost"] = new JsonObject { ["hourlyUsd"] = N(HourlyUsd), ["estimatedUsdPerMillionTokens"] = N(EstimatedUsdPerMillion) },
                ["endpointUrl"] = Url,
                ["chart"] = chart,
            };
        }
    }
}
