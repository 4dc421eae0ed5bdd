using System.ClientModel;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>
/// <c>serve</c> on our Q8_0 GGUF export of the fixture: llama.cpp behind the same HTTP layer and scheduler, driven by
/// the official OpenAI client. Greedy answers equal our TorchSharp engine's on the 16-bit weights (the Q8_0 export
/// matches token for token, <see cref="LlamaCppGgufTests"/>).
/// </summary>
public sealed class ServeGgufTests
{
    private const string Name = "tiny-llama-q8";
    private const int MaxConcurrency = 4;

    private static string Reference(IReadOnlyList<int> prompt, int maxTokens)
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        var tokens = TextGenerator.Generate(model, prompt, new GenerationOptions { MaxNewTokens = maxTokens, StopTokenIds = [ByteTokenizer.Eos] }, CPU)
            .TakeWhile(t => t != ByteTokenizer.Eos);
        return new ByteTokenizer().Decode(tokens);
    }

    private static IReadOnlyList<int> PromptIds(string text) => [ByteTokenizer.Bos, .. new ByteTokenizer().Encode(text)];

    [Fact]
    public async Task Does_serve_a_gguf_through_llama_cpp_with_the_reference_greedy_answers_streams_batches_and_metrics()
    {
        TorchRuntime.Initialize();
        using var dir = new TempDir();
        var gguf = FixtureGguf.Export(dir, GgmlType.Q8_0);
        await using var host = await ServeHost.StartAsync(new ServeOptions
        {
            ModelDirectory = dir.Path,
            ServedName = Name,
            Host = "127.0.0.1",
            Port = 0,
            MaxConcurrency = MaxConcurrency,
            MaxContext = 128,
            PrefillChunk = 24,
            Device = CPU,
            ApiKey = "k",
            MaxBodyBytes = 64 << 10,
        }, TimeProvider.System, _ => { });
        using var http = new HttpClient { BaseAddress = host.Address, Timeout = TimeSpan.FromSeconds(60) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "k");
        var options = new OpenAIClientOptions { Endpoint = new Uri(host.Address, "/v1"), NetworkTimeout = TimeSpan.FromSeconds(60) };
        var chat = new ChatClient(Name, new ApiKeyCredential("k"), options);
        Assert.Equal(dir.Path, Path.GetDirectoryName(LoadedModel.GgufPath(dir.Path)));
        Assert.Equal(gguf, LoadedModel.GgufPath(dir.Path));

        // Models, health, ready.
        var models = (await new OpenAIModelClient(new ApiKeyCredential("k"), options).GetModelsAsync()).Value;
        Assert.Contains(models, m => m.Id == Name);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("/health")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await http.GetAsync("/ready")).StatusCode);

        // Chat (the fixture has no template: ChatML, as on the TorchSharp path), greedy: the reference continuation.
        var chatPrompt = ChatTemplates.Render(ChatFormat.ChatMl, [new Lowbit.Engine.Tokenization.ChatMessage("user", "In the beginning")], addGenerationPrompt: true);
        var completion = (await chat.CompleteChatAsync([new UserChatMessage("In the beginning")], new ChatCompletionOptions { MaxOutputTokenCount = 16, Temperature = 0 })).Value;
        Assert.Equal(Reference(PromptIds(chatPrompt), 16), completion.Content[0].Text);
        Assert.Equal(PromptIds(chatPrompt).Count, completion.Usage.InputTokenCount);

        // Streaming: the pieces join to the whole answer, usage comes with the stream.
        var streamed = new StringBuilder();
        ChatTokenUsage? usage = null;
        await foreach (var update in chat.CompleteChatStreamingAsync([new UserChatMessage("In the beginning")], new ChatCompletionOptions { MaxOutputTokenCount = 16, Temperature = 0 }))
        {
            foreach (var part in update.ContentUpdate)
            {
                streamed.Append(part.Text);
            }
            usage ??= update.Usage;
        }
        Assert.Equal(completion.Content[0].Text, streamed.ToString());
        Assert.Equal(16, usage?.OutputTokenCount);

        // 8 concurrent completions through 4 sequences of one llama.cpp context: each equals the prompt served alone,
        // and the token counters on /metrics match the usage served.
        async Task<(string Text, int Completion, int Prompt)> Complete(string prompt)
        {
            using var response = await http.PostAsync("/v1/completions", new StringContent($$"""{"model":"{{Name}}","prompt":"{{prompt}}","max_tokens":8,"temperature":0}""", Encoding.UTF8, "application/json"));
            var body = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
            Assert.True(response.IsSuccessStatusCode, body.ToJsonString());
            return ((string)body["choices"]![0]!["text"]!, (int)body["usage"]!["completion_tokens"]!, (int)body["usage"]!["prompt_tokens"]!);
        }
        var prompts = Enumerable.Range(0, 8).Select(i => $"{(i % 2 == 0 ? "And" : "Then")} the {i} sons of Israel").ToArray();
        var alone = new List<string>();
        foreach (var prompt in prompts)
        {
            alone.Add((await Complete(prompt)).Text);
        }
        var before = await http.GetStringAsync("/metrics");
        var together = await Task.WhenAll(prompts.Select(Complete));
        var after = await http.GetStringAsync("/metrics");

        Assert.Equal(alone, together.Select(t => t.Text));
        Assert.Equal(Reference(PromptIds(prompts[0]), 8), alone[0]);
        Assert.Equal(together.Sum(t => t.Completion), ServeFixture.Series(after, EngineMetricNames.GenerationTokensTotal) - ServeFixture.Series(before, EngineMetricNames.GenerationTokensTotal));
        Assert.Equal(together.Sum(t => t.Prompt), ServeFixture.Series(after, EngineMetricNames.PromptTokensTotal) - ServeFixture.Series(before, EngineMetricNames.PromptTokensTotal));

        // Echo works here; the prompt's log-probabilities (echo + logprobs) are the TorchSharp path's only: a 400 naming echo.
        using (var echoed = await http.PostAsync("/v1/completions", new StringContent($$"""{"model":"{{Name}}","prompt":"{{prompts[0]}}","max_tokens":8,"temperature":0,"echo":true}""", Encoding.UTF8, "application/json")))
        {
            Assert.Equal(prompts[0] + alone[0], (string?)JsonNode.Parse(await echoed.Content.ReadAsStringAsync())!["choices"]![0]!["text"]);
        }
        using (var refused = await http.PostAsync("/v1/completions", new StringContent($$"""{"model":"{{Name}}","prompt":"x","max_tokens":2,"logprobs":1,"echo":true}""", Encoding.UTF8, "application/json")))
        {
            Assert.Equal(System.Net.HttpStatusCode.BadRequest, refused.StatusCode);
            Assert.Equal("echo", (string?)JsonNode.Parse(await refused.Content.ReadAsStringAsync())!["error"]!["param"]);
        }
        await host.StopAsync();
    }
}
