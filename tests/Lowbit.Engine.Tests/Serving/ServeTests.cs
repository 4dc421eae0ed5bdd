using System.ClientModel;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tokenization;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Models;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>The OpenAI-compatible server on the tiny-llama fixture, driven by the official OpenAI .NET client and raw HTTP.</summary>
public sealed class ServeTests : IClassFixture<ServeFixture>
{
    private const string Verse = "And the LORD spake unto Moses, saying";
    private readonly ServeFixture _server;

    public ServeTests(ServeFixture server) => _server = server;

    private OpenAIClientOptions ClientOptions => new() { Endpoint = _server.V1, NetworkTimeout = TimeSpan.FromSeconds(60) };

    private ChatClient Chat(string model = ServeFixture.Name) => new(model, new ApiKeyCredential(ServeFixture.Key), ClientOptions);

    private static string ChatPrompt(string user) => ChatTemplates.Render(ChatFormat.ChatMl, [new Lowbit.Engine.Tokenization.ChatMessage("user", user)], addGenerationPrompt: true);

    [Fact]
    public async Task Does_list_the_served_model_and_answer_health_and_ready()
    {
        var models = new OpenAIModelClient(new ApiKeyCredential(ServeFixture.Key), ClientOptions);

        var list = (await models.GetModelsAsync()).Value;

        Assert.Contains(list, m => m.Id == ServeFixture.Name && m.OwnedBy == "lowbit");
        Assert.Equal(System.Net.HttpStatusCode.OK, (await _server.Http.GetAsync("/health")).StatusCode);
        Assert.Equal(System.Net.HttpStatusCode.OK, (await _server.Http.GetAsync("/ready")).StatusCode);
    }

    [Fact]
    public async Task Does_answer_a_chat_with_the_reference_greedy_continuation_and_usage()
    {
        var expected = _server.Reference(_server.PromptIds(ChatPrompt("In the beginning")), 20);

        var completion = (await Chat().CompleteChatAsync([new UserChatMessage("In the beginning")], new ChatCompletionOptions { MaxOutputTokenCount = 20, Temperature = 0 })).Value;

        Assert.Equal(expected, completion.Content[0].Text);
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.Equal(20, completion.Usage.OutputTokenCount);
        Assert.Equal(_server.PromptIds(ChatPrompt("In the beginning")).Count, completion.Usage.InputTokenCount);
        Assert.StartsWith("chatcmpl-", completion.Id, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_stream_a_chat_whose_pieces_join_to_the_whole_answer_with_usage_last()
    {
        var options = new ChatCompletionOptions { MaxOutputTokenCount = 24, Temperature = 0 };
        var whole = (await Chat().CompleteChatAsync([new UserChatMessage("Noah")], options)).Value.Content[0].Text;

        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in Chat().CompleteChatStreamingAsync([new UserChatMessage("Noah")], options))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
            }
            finish ??= update.FinishReason;
            usage ??= update.Usage;
        }

        Assert.Equal(whole, text.ToString());
        Assert.Equal(ChatFinishReason.Length, finish);
        Assert.NotNull(usage);
        Assert.Equal(24, usage.OutputTokenCount);
    }

    [Fact]
    public async Task Does_complete_a_prompt_with_logprobs_in_openai_shape()
    {
        var expected = _server.Reference(_server.PromptIds(Verse), 16);

        var (status, body) = await _server.PostAsync("/v1/completions",
            $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":16,"temperature":0,"logprobs":2}""");

        Assert.Equal(200, status);
        Assert.Equal("text_completion", (string?)body["object"]);
        Assert.StartsWith("cmpl-", (string?)body["id"], StringComparison.Ordinal);
        var choice = body["choices"]![0]!;
        Assert.Equal(expected, (string?)choice["text"]);
        Assert.Equal("length", (string?)choice["finish_reason"]);
        var logprobs = choice["logprobs"]!;
        Assert.Equal(16, logprobs["tokens"]!.AsArray().Count);
        Assert.Equal(expected, string.Concat(logprobs["tokens"]!.AsArray().Select(t => (string?)t)));
        for (var i = 0; i < 16; i++)
        {
            var chosen = (double)logprobs["token_logprobs"]![i]!;
            var top = logprobs["top_logprobs"]![i]!.AsObject();
            Assert.InRange(top.Count, 1, 2);
            Assert.True(chosen <= 0);
            Assert.Equal(top.Max(p => (double)p.Value!), chosen, 4); // greedy picks the most likely token
        }
        Assert.Equal(_server.PromptIds(Verse).Count, (int)body["usage"]!["prompt_tokens"]!);
        Assert.Equal(16, (int)body["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Does_echo_the_prompt_with_its_token_logprobs_equal_to_the_model_s()
    {
        var ids = _server.PromptIds(Verse);
        var expected = _server.Reference(ids, 4);
        // The reference: log-softmax of one full forward over the prompt; token p + 1 read from position p's logits.
        float[] reference;
        using (var checkpoint = Lowbit.Engine.Checkpoints.Checkpoint.Open(TokenizerTests.FixtureDirectory))
        using (var model = Lowbit.Engine.Checkpoints.ModelIo.Load(checkpoint, TorchSharp.torch.ScalarType.Float32, TorchSharp.torch.CPU))
        using (TorchSharp.torch.no_grad())
        using (var scope = TorchSharp.torch.NewDisposeScope())
        {
            var input = TorchSharp.torch.tensor(ids.Select(i => (long)i).ToArray(), [1, ids.Count]);
            var logSoftmax = model.forward(input, null)[0].log_softmax(-1);
            reference = Enumerable.Range(0, ids.Count - 1).Select(p => logSoftmax[p, ids[p + 1]].item<float>()).ToArray();
        }

        var (status, body) = await _server.PostAsync("/v1/completions",
            $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":4,"temperature":0,"logprobs":2,"echo":true}""");

        Assert.Equal(200, status);
        var choice = body["choices"]![0]!;
        Assert.Equal(Verse + expected, (string?)choice["text"]);
        var logprobs = choice["logprobs"]!;
        var tokens = logprobs["tokens"]!.AsArray();
        Assert.Equal(ids.Count + 4, tokens.Count);
        Assert.Equal(Verse + expected, string.Concat(tokens.Select(t => (string?)t)));
        Assert.Null(logprobs["token_logprobs"]![0]);
        Assert.Null(logprobs["top_logprobs"]![0]);
        for (var p = 1; p < ids.Count; p++)
        {
            Assert.Equal(reference[p - 1], (double)logprobs["token_logprobs"]![p]!, 3);
            Assert.InRange(logprobs["top_logprobs"]![p]!.AsObject().Count, 1, 2);
        }
        var offsets = logprobs["text_offset"]!.AsArray().Select(o => (int)o!).ToArray();
        Assert.Equal(0, offsets[0]);
        Assert.Equal(Verse.Length, offsets[ids.Count]);
        Assert.Equal(offsets.Order(), offsets);

        // Echo without logprobs, streamed: the prompt comes first, then the completion.
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent($$$"""{"model":"{{{ServeFixture.Name}}}","prompt":"{{{Verse}}}","max_tokens":4,"temperature":0,"echo":true,"stream":true}""", Encoding.UTF8, "application/json"),
        };
        using var response = await _server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var chunks = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1]
            .Select(l => JsonNode.Parse(l["data: ".Length..])!["choices"]![0]!).ToList();
        Assert.Equal(Verse, (string?)chunks[0]["text"]);
        Assert.Equal(Verse + expected, string.Concat(chunks.Select(c => (string?)c["text"])));

        // Scoring: echo with max_tokens 0 answers the prompt and its log-probabilities only.
        var (scored, score) = await _server.PostAsync("/v1/completions",
            $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":0,"logprobs":0,"echo":true}""");
        Assert.Equal(200, scored);
        Assert.Equal(Verse, (string?)score["choices"]![0]!["text"]);
        Assert.Equal("length", (string?)score["choices"]![0]!["finish_reason"]);
        var scores = score["choices"]![0]!["logprobs"]!["token_logprobs"]!.AsArray();
        Assert.Equal(ids.Count, scores.Count);
        Assert.Null(scores[0]);
        Assert.All(Enumerable.Range(1, ids.Count - 1), p => Assert.Equal(reference[p - 1], (double)scores[p]!, 3));
        Assert.Equal(0, (int)score["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Does_stream_a_completion_as_sse_ending_in_done_with_a_usage_chunk()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
        {
            Content = new StringContent($$$"""{"model":"{{{ServeFixture.Name}}}","prompt":"{{{Verse}}}","max_tokens":10,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}""", Encoding.UTF8, "application/json"),
        };
        using var response = await _server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var lines = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal("data: [DONE]", lines[^1]);
        Assert.All(lines, l => Assert.StartsWith("data: ", l, StringComparison.Ordinal));
        var chunks = lines[..^1].Select(l => JsonNode.Parse(l["data: ".Length..])!.AsObject()).ToList();
        var usageChunk = chunks[^1];
        Assert.Empty(usageChunk["choices"]!.AsArray());
        Assert.Equal(10, (int)usageChunk["usage"]!["completion_tokens"]!);
        Assert.All(chunks[..^1], c => Assert.Null(c["usage"]));
        Assert.All(chunks, c => Assert.Equal("text_completion", (string?)c["object"]));
        Assert.Equal(_server.Reference(_server.PromptIds(Verse), 10), string.Concat(chunks[..^1].Select(c => (string?)c["choices"]![0]!["text"])));
        Assert.Equal("length", (string?)chunks[^2]["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Does_repeat_a_seeded_sample_and_stop_at_a_stop_string()
    {
        string Body(int seed) => $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":32,"temperature":1.0,"top_p":0.9,"top_k":40,"seed":{{seed}}}""";
        var a = (string?)(await _server.PostAsync("/v1/completions", Body(7))).Body["choices"]![0]!["text"];
        var b = (string?)(await _server.PostAsync("/v1/completions", Body(7))).Body["choices"]![0]!["text"];
        var c = (string?)(await _server.PostAsync("/v1/completions", Body(8))).Body["choices"]![0]!["text"];
        Assert.Equal(a, b);
        Assert.NotEqual(a, c);

        var greedy = _server.Reference(_server.PromptIds(Verse), 40);
        var stop = greedy.Substring(8, 3);
        var cut = greedy.IndexOf(stop, StringComparison.Ordinal);
        var (_, body) = await _server.PostAsync("/v1/completions",
            $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":40,"temperature":0,"stop":[{{JsonValue.Create(stop)!.ToJsonString()}}]}""");
        Assert.Equal(greedy[..cut], (string?)body["choices"]![0]!["text"]);
        Assert.Equal("stop", (string?)body["choices"]![0]!["finish_reason"]);
    }

    [Fact]
    public async Task Does_return_n_seeded_choices_each_equal_to_its_own_seed_served_alone()
    {
        string Body(int n, int seed) => $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{Verse}}","max_tokens":12,"temperature":1.0,"seed":{{seed}},"n":{{n}},"ignore_eos":true}""";
        var (status, body) = await _server.PostAsync("/v1/completions", Body(3, 11));
        var (_, again) = await _server.PostAsync("/v1/completions", Body(3, 11));

        Assert.Equal(200, status);
        var choices = body["choices"]!.AsArray();
        Assert.Equal([0, 1, 2], choices.Select(c => (int)c!["index"]!));
        var texts = choices.Select(c => (string?)c!["text"]).ToArray();
        Assert.Equal(texts, again["choices"]!.AsArray().Select(c => (string?)c!["text"]));
        Assert.True(texts.Distinct().Count() > 1, "independent samples differ");
        for (var i = 0; i < 3; i++)
        {
            // Choice i is the request with seed + i.
            Assert.Equal(texts[i], (string?)(await _server.PostAsync("/v1/completions", Body(1, 11 + i))).Body["choices"]![0]!["text"]);
        }
        Assert.Equal(_server.PromptIds(Verse).Count, (int)body["usage"]!["prompt_tokens"]!);
        Assert.Equal(36, (int)body["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Does_stream_n_chat_choices_by_index_each_joining_to_the_greedy_answer()
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$$"""{"model":"{{{ServeFixture.Name}}}","messages":[{"role":"user","content":"Noah"}],"max_tokens":10,"temperature":0,"n":2,"stream":true,"stream_options":{"include_usage":true}}""", Encoding.UTF8, "application/json"),
        };
        using var response = await _server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var lines = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);

        Assert.Equal("data: [DONE]", lines[^1]);
        var chunks = lines[..^1].Select(l => JsonNode.Parse(l["data: ".Length..])!.AsObject()).ToList();
        var expected = _server.Reference(_server.PromptIds(ChatPrompt("Noah")), 10);
        foreach (var index in new[] { 0, 1 })
        {
            var mine = chunks.SelectMany(c => c["choices"]!.AsArray()).Where(c => (int)c!["index"]! == index).ToList();
            Assert.Equal("assistant", (string?)mine[0]!["delta"]!["role"]);
            Assert.Equal(expected, string.Concat(mine.Select(c => (string?)c!["delta"]!["content"])));
            Assert.Equal("length", (string?)mine[^1]!["finish_reason"]);
        }
        Assert.Equal(20, (int)chunks[^1]["usage"]!["completion_tokens"]!);
    }

    [Fact]
    public async Task Does_serve_64_concurrent_streams_within_the_concurrency_bound_each_equal_to_the_prompt_served_alone()
    {
        var prompts = Enumerable.Range(0, 64).Select(i => $"{(i % 2 == 0 ? "And" : "Then")} the {i} sons of Israel").ToArray();
        var alone = new string[prompts.Length];
        for (var i = 0; i < prompts.Length; i++)
        {
            alone[i] = (string)(await _server.PostAsync("/v1/completions", $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{prompts[i]}}","max_tokens":8,"temperature":0}""")).Body["choices"]![0]!["text"]!;
        }
        var maxRunning = 0.0;
        using var done = new CancellationTokenSource();
        var watcher = Task.Run(async () =>
        {
            while (!done.IsCancellationRequested)
            {
                maxRunning = Math.Max(maxRunning, ServeFixture.Series(await _server.MetricsAsync(), EngineMetricNames.NumRequestsRunning));
                await Task.Delay(5);
            }
        });
        var chat = Chat();

        var together = await Task.WhenAll(prompts.Select(async p =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent($$"""{"model":"{{ServeFixture.Name}}","prompt":"{{p}}","max_tokens":8,"temperature":0,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var response = await _server.Http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            return string.Concat(events[..^1].Select(e => (string?)JsonNode.Parse(e["data: ".Length..])!["choices"]![0]!["text"]));
        }));
        await done.CancelAsync();
        await watcher;

        Assert.Equal(alone, together);
        Assert.InRange(maxRunning, 0, ServeFixture.MaxConcurrency);
    }

    [Fact]
    public async Task Does_free_the_slot_when_a_client_disconnects_mid_stream()
    {
        using (var cancel = new CancellationTokenSource())
        {
            var pieces = 0;
            var stream = Chat().CompleteChatStreamingAsync([new UserChatMessage("Abraham")], new ChatCompletionOptions { MaxOutputTokenCount = 150, Temperature = 0 }, cancel.Token);
            await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
            {
                await foreach (var update in stream)
                {
                    if (++pieces == 3)
                    {
                        await cancel.CancelAsync();
                    }
                }
            });
        }
        var watch = Stopwatch.StartNew();
        double running;
        while ((running = ServeFixture.Series(await _server.MetricsAsync(), EngineMetricNames.NumRequestsRunning)) > 0 && watch.Elapsed < TimeSpan.FromSeconds(20))
        {
            await Task.Delay(20);
        }

        Assert.Equal(0, running);
        Assert.Equal(0, ServeFixture.Series(await _server.MetricsAsync(), EngineMetricNames.KvCacheUsagePerc));
    }

    [Theory]
    [InlineData("""{"model":"nope","prompt":"x","max_tokens":4}""", 404, "model")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","max_tokens":0}""", 400, "max_tokens")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","max_tokens":300}""", 400, "max_tokens")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","temperature":5}""", 400, "temperature")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","temperature":"hot"}""", 400, "temperature")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","n":0}""", 400, "n")]
    [InlineData("""{"model":"tiny-llama","prompt":"x","n":129}""", 400, "n")]
    [InlineData("""{"model":"tiny-llama"}""", 400, "prompt")]
    [InlineData("""{"model":"tiny-llama","prompt":"x",""", 400, null)]
    public async Task Does_reject_bad_completion_input_in_openai_error_shape_naming_the_field(string json, int status, string? param)
    {
        var (code, body) = await _server.PostAsync("/v1/completions", json);

        Assert.Equal(status, code);
        var error = body["error"]!.AsObject();
        Assert.Equal(param, (string?)error["param"]);
        Assert.False(string.IsNullOrWhiteSpace((string?)error["message"]));
        Assert.NotNull((string?)error["type"]);
        Assert.True(error.ContainsKey("code"));
    }

    [Fact]
    public async Task Does_reject_a_prompt_longer_than_the_context_an_oversized_body_and_a_missing_key()
    {
        var longPrompt = new string('a', ServeFixture.MaxContext + 10);
        var (tooLong, body) = await _server.PostAsync("/v1/completions", $$"""{"model":"tiny-llama","prompt":"{{longPrompt}}","max_tokens":4}""");
        Assert.Equal(400, tooLong);
        Assert.Equal("prompt", (string?)body["error"]!["param"]);
        Assert.Contains("maximum context length is 256", (string?)body["error"]!["message"], StringComparison.Ordinal);

        var chatTooLong = await Assert.ThrowsAsync<ClientResultException>(() => Chat().CompleteChatAsync([new UserChatMessage(longPrompt)]));
        Assert.Equal(400, chatTooLong.Status);

        var huge = new string('b', 70 << 10);
        var (oversized, big) = await _server.PostAsync("/v1/completions", $$"""{"model":"tiny-llama","prompt":"{{huge}}"}""");
        Assert.Equal(413, oversized);
        Assert.NotNull(big["error"]!["message"]);

        var (unauthorized, denied) = await _server.PostAsync("/v1/completions", """{"model":"tiny-llama","prompt":"x"}""", auth: false);
        Assert.Equal(401, unauthorized);
        Assert.Equal("invalid_api_key", (string?)denied["error"]!["code"]);
        var wrongKey = new ChatClient(ServeFixture.Name, new ApiKeyCredential("wrong"), ClientOptions);
        Assert.Equal(401, (await Assert.ThrowsAsync<ClientResultException>(() => wrongKey.CompleteChatAsync([new UserChatMessage("x")]))).Status);
    }

    [Fact]
    public async Task Does_export_metrics_that_promtool_accepts_and_whose_token_counters_match_the_usage_served()
    {
        var before = await _server.MetricsAsync();
        var served = 0;
        var prompted = 0;
        foreach (var prompt in new[] { "Jacob", "Joseph" })
        {
            var (_, body) = await _server.PostAsync("/v1/completions", $$"""{"model":"{{ServeFixture.Name}}","prompt":"{{prompt}}","max_tokens":5,"temperature":0}""");
            served += (int)body["usage"]!["completion_tokens"]!;
            prompted += (int)body["usage"]!["prompt_tokens"]!;
        }
        var after = await _server.MetricsAsync();

        Assert.Equal(served, ServeFixture.Series(after, EngineMetricNames.GenerationTokensTotal) - ServeFixture.Series(before, EngineMetricNames.GenerationTokensTotal));
        Assert.Equal(prompted, ServeFixture.Series(after, EngineMetricNames.PromptTokensTotal) - ServeFixture.Series(before, EngineMetricNames.PromptTokensTotal));
        Assert.Equal(2, ServeFixture.Series(after, EngineMetricNames.E2eRequestLatencySeconds + "_count") - ServeFixture.Series(before, EngineMetricNames.E2eRequestLatencySeconds + "_count"));
        foreach (var family in EngineMetricNames.All)
        {
            Assert.Contains($"# TYPE {family} ", after, StringComparison.Ordinal);
        }
        Assert.Equal(EngineMetricNames.TimeToFirstTokenBuckets.Count + 1, after.Split('\n').Count(l => l.StartsWith(EngineMetricNames.TimeToFirstTokenSeconds + "_bucket{model_name=\"tiny-llama\",le=", StringComparison.Ordinal)));
        // promtool parses the exposition; its only findings may be the lint on the contract's vLLM-style "prefix:" names
        // (vLLM's own /metrics gets the same lint). A format error would be reported as a parsing error instead.
        var (exit, output) = await Promtool(after);
        var findings = output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(exit == 0 || findings.All(f => f.EndsWith("metric names should not contain ':'", StringComparison.Ordinal)), $"promtool check metrics: {output}");
        Assert.Equal(EngineMetricNames.All.Count, findings.Length);
    }

    private static async Task<(int Exit, string Output)> Promtool(string metrics)
    {
        var tool = Path.GetFullPath(Path.Combine(TokenizerTests.FixtureDirectory, "..", "..", "..", ".tools", "bin", "promtool"));
        var start = new ProcessStartInfo(File.Exists(tool) ? tool : "promtool", "check metrics")
        {
            RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true,
        };
        using var process = Process.Start(start)!;
        await process.StandardInput.WriteAsync(metrics);
        process.StandardInput.Close();
        var output = await process.StandardOutput.ReadToEndAsync() + await process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        return (process.ExitCode, output);
    }

    [Fact]
    public async Task Does_answer_a_chat_request_given_as_raw_json_in_the_openai_shape()
    {
        var (status, body) = await _server.PostAsync("/v1/chat/completions",
            """{"model":"tiny-llama","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Moses"}]}],"max_tokens":6,"temperature":0,"logprobs":true,"top_logprobs":1}""");

        Assert.Equal(200, status);
        Assert.Equal("chat.completion", (string?)body["object"]);
        Assert.True((long)body["created"]! > 1_700_000_000);
        var choice = body["choices"]![0]!;
        Assert.Equal("assistant", (string?)choice["message"]!["role"]);
        Assert.Equal(6, choice["logprobs"]!["content"]!.AsArray().Count);
        Assert.Equal(6, (int)body["usage"]!["completion_tokens"]!);
        Assert.Equal((int)body["usage"]!["prompt_tokens"]! + 6, (int)body["usage"]!["total_tokens"]!);
        _ = CultureInfo.InvariantCulture;
    }

    [Fact]
    public async Task Does_serve_a_lora_adapter_selected_by_model_name_next_to_the_base_model_in_one_batch()
    {
        using var temp = new TempDir();
        const int Rank = 4;
        const double Alpha = 8;
        var tensors = new Dictionary<string, TorchSharp.torch.Tensor>();
        var generator = new TorchSharp.torch.Generator(20261204);
        using var checkpoint = Lowbit.Engine.Checkpoints.Checkpoint.Open(TokenizerTests.FixtureDirectory);
        using (var reference = Lowbit.Engine.Checkpoints.ModelIo.Load(checkpoint, TorchSharp.torch.ScalarType.Float32, TorchSharp.torch.CPU))
        {
            foreach (var layer in Enumerable.Range(0, reference.Config.NumHiddenLayers))
            {
                foreach (var (module, inFeatures, outFeatures) in new[] { ("self_attn.q_proj", 256L, 256L), ("self_attn.v_proj", 256L, 128L), ("mlp.down_proj", 768L, 256L) })
                {
                    var key = $"base_model.model.model.layers.{layer}.{module}";
                    tensors[key + ".lora_A.weight"] = TorchSharp.torch.randn([Rank, inFeatures], generator: generator) * Scalars.Of(0.15);
                    tensors[key + ".lora_B.weight"] = TorchSharp.torch.randn([outFeatures, Rank], generator: generator) * Scalars.Of(0.15);
                }
            }
            Lowbit.Engine.Formats.SafetensorsWriter.Write(temp.File("adapter_model.safetensors"), tensors);
            await File.WriteAllTextAsync(temp.File("adapter_config.json"), """
                {"base_model_name_or_path": "tiny-llama", "bias": "none", "fan_in_fan_out": false, "lora_alpha": 8, "lora_dropout": 0.0,
                 "peft_type": "LORA", "r": 4, "target_modules": ["q_proj", "v_proj", "down_proj"], "task_type": "CAUSAL_LM", "use_rslora": false}
                """);
            // The reference: the same adapter merged into the weights (W + alpha/r · B·A), decoded alone.
            using (TorchSharp.torch.no_grad())
            {
                reference.ReplaceLinears((name, linear) =>
                {
                    if (tensors.TryGetValue($"base_model.model.{name}.lora_A.weight", out var a))
                    {
                        ((Lowbit.Engine.Network.DenseLinear)linear).Weight.add_(tensors[$"base_model.model.{name}.lora_B.weight"].matmul(a) * Scalars.Of((Alpha / Rank)), Scalars.One);
                    }
                    return null;
                });
            }
            var prompt = _server.PromptIds(Verse);
            var merged = _server.Tokenizer.Decode(Lowbit.Engine.Generation.TextGenerator.Generate(reference, prompt, new Lowbit.Engine.Generation.GenerationOptions { MaxNewTokens = 16, StopTokenIds = [ByteTokenizer.Eos] }, TorchSharp.torch.CPU).TakeWhile(t => t != ByteTokenizer.Eos));
            var baseline = _server.Reference(prompt, 16);
            Assert.NotEqual(baseline, merged);

            var (loaded, _) = await _server.PostAsync("/v1/load_lora_adapter", new JsonObject { ["lora_name"] = "kjv-lora", ["lora_path"] = temp.Path }.ToJsonString());
            Assert.Equal(200, loaded);
            var models = (await new OpenAIModelClient(new ApiKeyCredential(ServeFixture.Key), ClientOptions).GetModelsAsync()).Value;
            Assert.Contains(models, m => m.Id == "kjv-lora");

            string Body(string model) => $$"""{"model":"{{model}}","prompt":"{{Verse}}","max_tokens":16,"temperature":0}""";
            var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => _server.PostAsync("/v1/completions", Body(i % 2 == 0 ? "kjv-lora" : ServeFixture.Name))));
            for (var i = 0; i < answers.Length; i++)
            {
                Assert.Equal(i % 2 == 0 ? merged : baseline, (string?)answers[i].Body["choices"]![0]!["text"]);
            }

            var (unloaded, _) = await _server.PostAsync("/v1/unload_lora_adapter", """{"lora_name":"kjv-lora"}""");
            Assert.Equal(200, unloaded);
            Assert.Equal(404, (await _server.PostAsync("/v1/completions", Body("kjv-lora"))).Status);
            Assert.Equal(404, (await _server.PostAsync("/v1/unload_lora_adapter", """{"lora_name":"kjv-lora"}""")).Status);
            var (badPath, error) = await _server.PostAsync("/v1/load_lora_adapter", """{"lora_name":"x","lora_path":"/nonexistent"}""");
            Assert.Equal(400, badPath);
            Assert.Equal("lora_path", (string?)error["error"]!["param"]);
        }
        foreach (var t in tensors.Values)
        {
            t.Dispose();
        }
    }
}
