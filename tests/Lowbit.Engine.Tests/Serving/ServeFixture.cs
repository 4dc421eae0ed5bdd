using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>A live server on the tiny-llama fixture on 127.0.0.1 (a free port), shared by a test class.</summary>
public sealed class ServeFixture : IAsyncLifetime
{
    public const string Name = "tiny-llama";
    public const string Key = "test-key";
    public const int MaxConcurrency = 8;
    public const int MaxContext = 256;

    private LlamaForCausalLM? _reference;

    public ServeHost Host { get; private set; } = null!;

    public HttpClient Http { get; private set; } = null!;

    public Uri V1 => new(Host.Address, "/v1");

    public ByteTokenizer Tokenizer { get; } = new();

    public async Task InitializeAsync()
    {
        TorchRuntime.Initialize();
        Host = await ServeHost.StartAsync(Options(), TimeProvider.System, _ => { });
        Http = new HttpClient { BaseAddress = Host.Address, Timeout = TimeSpan.FromSeconds(60) };
        Http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Key);
    }

    public static ServeOptions Options() => new()
    {
        ModelDirectory = TokenizerTests.FixtureDirectory,
        ServedName = Name,
        Host = "127.0.0.1",
        Port = 0,
        MaxConcurrency = MaxConcurrency,
        MaxContext = MaxContext,
        PrefillChunk = 24,
        Device = CPU,
        ApiKey = Key,
        MaxBodyBytes = 64 << 10,
    };

    /// <summary>Greedy continuation of <paramref name="prompt"/> by the engine's single-sequence generator (the reference path).</summary>
    public string Reference(IReadOnlyList<int> prompt, int maxTokens)
    {
        lock (this)
        {
            if (_reference is null)
            {
                using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
                _reference = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
            }
            var tokens = TextGenerator.Generate(_reference, prompt, new Lowbit.Engine.Generation.GenerationOptions { MaxNewTokens = maxTokens, StopTokenIds = [ByteTokenizer.Eos] }, CPU)
                .TakeWhile(t => t != ByteTokenizer.Eos);
            return Tokenizer.Decode(tokens);
        }
    }

    public IReadOnlyList<int> PromptIds(string text) => [ByteTokenizer.Bos, .. Tokenizer.Encode(text)];

    public async Task<(int Status, JsonObject Body)> PostAsync(string path, string json, bool auth = true)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (!auth)
        {
            request.Headers.Authorization = null;
            using var bare = new HttpClient { BaseAddress = Host.Address };
            using var r = await bare.SendAsync(request);
            return ((int)r.StatusCode, JsonNode.Parse(await r.Content.ReadAsStringAsync())!.AsObject());
        }
        using var response = await Http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return ((int)response.StatusCode, text.StartsWith('{') ? JsonNode.Parse(text)!.AsObject() : new JsonObject { ["raw"] = text });
    }

    public async Task<string> MetricsAsync() => await Http.GetStringAsync("/metrics");

    /// <summary>The value of a series line <c>name{model_name="tiny-llama"} v</c>.</summary>
    public static double Series(string metrics, string name) =>
        double.Parse(metrics.Split('\n').First(l => l.StartsWith(name + "{", StringComparison.Ordinal) && !l.Contains("le=", StringComparison.Ordinal)).Split(' ')[^1], System.Globalization.CultureInfo.InvariantCulture);

    public async Task DisposeAsync()
    {
        Http?.Dispose();
        if (Host is not null)
        {
            await Host.StopAsync();
            await Host.DisposeAsync();
        }
        _reference?.Dispose();
    }
}
