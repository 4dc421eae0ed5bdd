using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Tokenization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>Everything the server needs, resolved (the verb turns <see cref="Protocol.ServeRequest"/> into this).</summary>
public sealed record ServeOptions
{
    /// <summary>A local model folder (HF safetensors or a lowbit artifact), or a .gguf file / a folder with one .gguf (llama.cpp).</summary>
    public required string ModelDirectory { get; init; }

    public required string ServedName { get; init; }

    public string Host { get; init; } = "0.0.0.0";

    /// <summary>0 picks a free port (tests).</summary>
    public int Port { get; init; } = Protocol.ServeRequest.DefaultPort;

    public int MaxContext { get; init; } = 4096;

    public int MaxConcurrency { get; init; } = 8;

    /// <summary>
    /// Prompt tokens prefilled per scheduler iteration over all prefilling requests (<c>--max-num-batched-tokens</c>,
    /// vLLM's <c>max_num_batched_tokens</c>); <see cref="PrefillBudgets.For"/> picks the default by device.
    /// </summary>
    public int PrefillChunk { get; init; } = PrefillBudgets.Cpu;

    /// <summary>
    /// Run one prefill at the full <see cref="PrefillChunk"/> shape and one decode step on dummy tokens before
    /// <c>/ready</c> (then clear the slots), so the first requests pay no first-time costs. Tests turn it off to compare.
    /// </summary>
    public bool WarmUp { get; init; } = true;

    public required Device Device { get; init; }

    /// <summary>
    /// <c>--shards</c>: the device of each pipeline shard (<see cref="PipelinePlacement.ResolveDevices"/>); empty: the
    /// model is not split and runs on <see cref="Device"/>.
    /// </summary>
    public IReadOnlyList<Device> ShardDevices { get; init; } = [];

    /// <summary>When set, <c>/v1/*</c> needs <c>Authorization: Bearer KEY</c>.</summary>
    public string? ApiKey { get; init; }

    /// <summary>LoRA adapters to load at start: name → PEFT folder.</summary>
    public IReadOnlyDictionary<string, string> Adapters { get; init; } = new Dictionary<string, string>();

    public long MaxBodyBytes { get; init; } = 4 << 20;

    /// <summary>How long SIGTERM waits for in-flight requests.</summary>
    public TimeSpan DrainTimeout { get; init; } = TimeSpan.FromMinutes(2);
}

/// <summary>The prefill budgets <c>serve</c> uses when <c>--max-num-batched-tokens</c> is not given (the contract's defaults).</summary>
public static class PrefillBudgets
{
    /// <inheritdoc cref="Protocol.ServeRequest.CudaMaxNumBatchedTokens"/>
    public const int Cuda = Protocol.ServeRequest.CudaMaxNumBatchedTokens;

    /// <inheritdoc cref="Protocol.ServeRequest.CpuMaxNumBatchedTokens"/>
    public const int Cpu = Protocol.ServeRequest.CpuMaxNumBatchedTokens;

    /// <summary>The default for a model served on <paramref name="device"/> (<paramref name="gguf"/>: llama.cpp, always the CPU).</summary>
    public static int For(Device device, bool gguf) => !gguf && device.type == TorchSharp.DeviceType.CUDA ? Cuda : Cpu;
}

/// <summary>
/// The OpenAI-compatible HTTP server (Kestrel minimal API) in front of a <see cref="ServeScheduler"/>:
/// <c>/v1/models</c>, <c>/v1/completions</c>, <c>/v1/chat/completions</c> (JSON or SSE), <c>/health</c>,
/// <c>/ready</c>, <c>/metrics</c>, and vLLM's LoRA endpoints. Kestrel listens before the weights load, so
/// <c>/health</c> answers at once and <c>/ready</c> turns 200 once the model is loaded.
/// </summary>
public sealed class ServeHost : IAsyncDisposable
{
    private readonly ServeOptions _options;
    private readonly TimeProvider _time;
    private readonly Action<string> _log;
    private readonly WebApplication _app;
    private readonly long _created;
    private readonly TaskCompletionSource _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private LoadedModel? _loaded;

    private ServeHost(ServeOptions options, TimeProvider time, Action<string> log)
    {
        _options = options;
        _time = time;
        _log = log;
        _created = time.GetUtcNow().ToUnixTimeSeconds();
        Metrics = new ServeMetrics(options.ServedName);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.DrainTimeout);
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Limits.MaxRequestBodySize = null;
            k.AddServerHeader = false;
            if (options.Host is "0.0.0.0" or "*")
            {
                k.ListenAnyIP(options.Port);
            }
            else
            {
                k.Listen(IPAddress.Parse(options.Host), options.Port);
            }
        });
        _app = builder.Build();
        _app.Lifetime.ApplicationStopping.Register(() => _loaded?.Scheduler.StopAccepting());
        Map(_app);
    }

    public ServeMetrics Metrics { get; }

    public bool Ready => _loaded is not null;

    /// <summary>The address clients call, e.g. <c>http://127.0.0.1:8080</c>.</summary>
    public Uri Address { get; private set; } = new("http://127.0.0.1/");

    /// <summary>Completes with the scheduler's failure, if it fails.</summary>
    public Task Failed => _failed.Task;

    public IHostApplicationLifetime Lifetime => _app.Lifetime;

    /// <summary>Starts listening, then loads the model (ready afterwards).</summary>
    public static async Task<ServeHost> StartAsync(ServeOptions options, TimeProvider time, Action<string> log, CancellationToken cancellationToken = default)
    {
        var host = new ServeHost(options, time, log);
        await host._app.StartAsync(cancellationToken).ConfigureAwait(false);
        var address = host._app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        host.Address = new Uri(address.Replace("[::]", "127.0.0.1", StringComparison.Ordinal).Replace("0.0.0.0", "127.0.0.1", StringComparison.Ordinal));
        log($"listening on {host.Address}");
        host._loaded = await Task.Run(() => LoadedModel.Load(options, host.Metrics, time, log, ex => host._failed.TrySetException(ex)), cancellationToken).ConfigureAwait(false);
        var split = options.ShardDevices.Count > 0 ? $", split over {options.ShardDevices.Count} pipeline shards (see the shard lines)" : "";
        log($"ready: {options.ServedName} ({host._loaded.Batch.CacheBytes / (1 << 20)} MiB KV cache for {options.MaxConcurrency} × {options.MaxContext} positions{split})");
        return host;
    }

    /// <summary>Waits until the host stops (SIGTERM/SIGINT or <see cref="StopAsync"/>).</summary>
    public Task WaitForShutdownAsync() => _app.WaitForShutdownAsync();

    public Task StopAsync() => _app.StopAsync();

    public async ValueTask DisposeAsync()
    {
        await _app.DisposeAsync().ConfigureAwait(false);
        if (_loaded?.Batch is FastDecodeBackend fast)
        {
            _log($"decode path: {fast.Describe()}; {fast.GraphSummary()}");
        }
        _loaded?.Dispose();
    }

    private void Map(WebApplication app)
    {
        app.Use(async (context, next) =>
        {
            if (_options.ApiKey is { } key && context.Request.Path.StartsWithSegments("/v1", StringComparison.Ordinal)
                && !KeyMatches(context.Request.Headers.Authorization.ToString(), key))
            {
                await WriteError(context, new OpenAiError(401, "Incorrect or missing API key: send Authorization: Bearer <key>", null, "invalid_api_key")).ConfigureAwait(false);
                return;
            }
            try
            {
                await next(context).ConfigureAwait(false);
            }
            catch (OpenAiError error) when (!context.Response.HasStarted)
            {
                await WriteError(context, error).ConfigureAwait(false);
            }
        });
        app.MapGet("/health", () => Results.Ok());
        app.MapGet("/ready", (HttpContext c) => Ready
            ? Results.Text("ready\n")
            : Results.Text("loading\n", statusCode: 503));
        app.MapGet("/metrics", () => Results.Text(Metrics.Render(), ServeMetrics.ContentType));
        app.MapGet("/v1/models", () => Results.Text(Models().ToJsonString(), "application/json"));
        app.MapPost("/v1/completions", context => Generate(context, chat: false));
        app.MapPost("/v1/chat/completions", context => Generate(context, chat: true));
        app.MapPost("/v1/load_lora_adapter", LoadAdapter);
        app.MapPost("/v1/unload_lora_adapter", UnloadAdapter);
    }

    private static bool KeyMatches(string header, string key)
    {
        const string Bearer = "Bearer ";
        if (!header.StartsWith(Bearer, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }
        return CryptographicOperations.FixedTimeEquals(Encoding.UTF8.GetBytes(header[Bearer.Length..].Trim()), Encoding.UTF8.GetBytes(key));
    }

    private JsonObject Models()
    {
        var data = new JsonArray
        {
            new JsonObject
            {
                ["id"] = _options.ServedName, ["object"] = "model", ["created"] = _created, ["owned_by"] = "lowbit",
                ["root"] = _options.ModelDirectory, ["parent"] = null, ["max_model_len"] = _options.MaxContext,
            },
        };
        foreach (var (name, path) in _loaded?.LoadedAdapters ?? [])
        {
            data.Add(new JsonObject
            {
                ["id"] = name, ["object"] = "model", ["created"] = _created, ["owned_by"] = "lowbit",
                ["root"] = path, ["parent"] = _options.ServedName, ["max_model_len"] = _options.MaxContext,
            });
        }
        return new JsonObject { ["object"] = "list", ["data"] = data };
    }

    private LoadedModel RequireLoaded() =>
        _loaded ?? throw new OpenAiError(503, "the model is still loading; retry when GET /ready answers 200", null, "model_loading", "service_unavailable");

    private async Task<JsonObject> ReadBody(HttpContext context)
    {
        var limit = _options.MaxBodyBytes;
        if (context.Request.ContentLength is { } length && length > limit)
        {
            throw new OpenAiError(413, $"request body: {length} bytes is over the limit of {limit} bytes", null, "request_too_large");
        }
        using var buffer = new MemoryStream();
        var chunk = new byte[16384];
        int read;
        while ((read = await context.Request.Body.ReadAsync(chunk, context.RequestAborted).ConfigureAwait(false)) > 0)
        {
            buffer.Write(chunk, 0, read);
            if (buffer.Length > limit)
            {
                throw new OpenAiError(413, $"request body: over the limit of {limit} bytes", null, "request_too_large");
            }
        }
        return OpenAiRequests.ParseBody(buffer.ToArray());
    }

    private async Task Generate(HttpContext context, bool chat)
    {
        var loaded = RequireLoaded();
        var body = await ReadBody(context).ConfigureAwait(false);
        var parsed = chat ? OpenAiRequests.Chat(body) : OpenAiRequests.Completion(body);
        var adapter = parsed.Model == _options.ServedName ? 0 : loaded.AdapterRowOf(parsed.Model)
            ?? throw new OpenAiError(404, $"The model `{parsed.Model}` does not exist; GET /v1/models lists {string.Join(", ", Models()["data"]!.AsArray().Select(m => (string?)m!["id"]))}", "model", "model_not_found");
        var (prompt, stops, stopIds) = loaded.Tokenize(parsed);
        var promptParam = chat ? "messages" : "prompt";
        if (prompt.Count == 0)
        {
            throw OpenAiError.BadField(promptParam, "the prompt is empty");
        }
        var room = _options.MaxContext - prompt.Count;
        var maxTokens = parsed.MaxTokens ?? room;
        if (room <= 0 || maxTokens > room)
        {
            throw new OpenAiError(400,
                $"This model's maximum context length is {_options.MaxContext} tokens. However, you requested {prompt.Count + Math.Max(maxTokens, 0)} tokens ({prompt.Count} in the {promptParam}, {maxTokens} for the completion). Please reduce the length of the {promptParam} or max_tokens.",
                room <= 0 ? promptParam : "max_tokens", "context_length_exceeded");
        }
        if (parsed.Echo && parsed.Sampling.Logprobs is not null && !loaded.Batch.BatchesPrefill)
        {
            throw OpenAiError.BadField("echo", "the prompt's log-probabilities (echo with logprobs) are not supported for a GGUF model (llama.cpp path); leave out logprobs or echo");
        }
        var echo = parsed.Echo ? new Echo(parsed.PromptText ?? loaded.Tokenizer.Decode(prompt), loaded.Tokenizer) : null;
        var requests = new List<GenerationRequest>(parsed.N);
        try
        {
            for (var i = 0; i < parsed.N; i++)
            {
                // n independent samples: each its own request (and slot); a seeded request's choice i uses seed + i.
                requests.Add(loaded.Scheduler.Submit(new RequestOptions
                {
                    Prompt = prompt,
                    MaxTokens = maxTokens,
                    Sampling = parsed.Sampling.Seed is { } seed ? parsed.Sampling with { Seed = unchecked(seed + i) } : parsed.Sampling,
                    Stop = parsed.Stop.Concat(stops).Distinct().ToArray(),
                    StopTokenIds = stopIds,
                    IgnoreEos = parsed.IgnoreEos,
                    Adapter = adapter,
                    PromptLogprobs = parsed.Echo ? parsed.Sampling.Logprobs : null,
                }));
            }
        }
        catch (InvalidOperationException ex)
        {
            CancelAll(requests, loaded);
            throw new OpenAiError(503, ex.Message, null, "shutting_down", "service_unavailable");
        }
        using var registration = context.RequestAborted.Register(() => CancelAll(requests, loaded));
        var id = (chat ? "chatcmpl-" : "cmpl-") + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(16));
        var created = _time.GetUtcNow().ToUnixTimeSeconds();
        try
        {
            if (parsed.Stream)
            {
                await Stream(context, requests, parsed, id, created, chat, echo).ConfigureAwait(false);
            }
            else
            {
                await Whole(context, requests, parsed, id, created, chat, echo).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (context.RequestAborted.IsCancellationRequested)
        {
            CancelAll(requests, loaded);
        }
    }

    private static void CancelAll(IEnumerable<GenerationRequest> requests, LoadedModel loaded)
    {
        foreach (var request in requests)
        {
            request.Cancel();
        }
        loaded.Scheduler.Poke();
    }

    /// <summary>Completions' echo: the prompt's text, and the tokenizer that spells its tokens for the log-probabilities.</summary>
    private sealed record Echo(string Text, ITextTokenizer Tokenizer);

    private static async Task Whole(HttpContext context, IReadOnlyList<GenerationRequest> requests, ParsedRequest parsed, string id, long created, bool chat, Echo? echo)
    {
        var choices = new JsonArray();
        var lasts = new GenerationEvent?[requests.Count];
        for (var i = 0; i < requests.Count; i++)
        {
            var text = new StringBuilder();
            var logprobs = new List<TokenLogprob>();
            await foreach (var e in requests[i].Events.ReadAllAsync(context.RequestAborted).ConfigureAwait(false))
            {
                text.Append(e.Text);
                logprobs.AddRange(e.Logprobs);
                lasts[i] = e;
            }
            var finish = lasts[i]?.FinishReason ?? "abort";
            choices.Add(chat
                ? new JsonObject
                {
                    ["index"] = i,
                    ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = text.ToString() },
                    ["logprobs"] = parsed.ChatLogprobs ? ChatLogprobs(logprobs) : null,
                    ["finish_reason"] = finish,
                }
                : new JsonObject
                {
                    ["index"] = i,
                    ["text"] = (echo?.Text ?? "") + text,
                    ["logprobs"] = parsed.Sampling.Logprobs is null ? null : CompletionLogprobs(logprobs, echo, requests[i].PromptLogprobs),
                    ["finish_reason"] = finish,
                });
        }
        var response = new JsonObject
        {
            ["id"] = id,
            ["object"] = chat ? "chat.completion" : "text_completion",
            ["created"] = created,
            ["model"] = parsed.Model,
            ["choices"] = choices,
            ["usage"] = Usage(requests, lasts),
        };
        if (chat)
        {
            response["system_fingerprint"] = null;
        }
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(response.ToJsonString(), context.RequestAborted).ConfigureAwait(false);
    }

    private static async Task Stream(HttpContext context, IReadOnlyList<GenerationRequest> requests, ParsedRequest parsed, string id, long created, bool chat, Echo? echo)
    {
        var response = context.Response;
        response.ContentType = "text/event-stream";
        response.Headers.CacheControl = "no-cache";
        var objectName = chat ? "chat.completion.chunk" : "text_completion";
        JsonObject Chunk(JsonObject choice) => new()
        {
            ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = parsed.Model,
            ["choices"] = new JsonArray(choice),
            ["usage"] = null,
        };
        async Task Send(JsonNode payload)
        {
            await response.WriteAsync("data: " + payload.ToJsonString() + "\n\n", context.RequestAborted).ConfigureAwait(false);
            await response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        }
        if (chat)
        {
            for (var i = 0; i < requests.Count; i++)
            {
                await Send(Chunk(new JsonObject
                {
                    ["index"] = i, ["delta"] = new JsonObject { ["role"] = "assistant", ["content"] = "" }, ["logprobs"] = null, ["finish_reason"] = null,
                })).ConfigureAwait(false);
            }
        }
        else
        {
            await response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
        }
        // The choices' events in the order they come (one reader per choice into one channel).
        var merged = Channel.CreateUnbounded<(int Index, GenerationEvent Event)>();
        var readers = requests.Select(async (request, index) =>
        {
            await foreach (var e in request.Events.ReadAllAsync(context.RequestAborted).ConfigureAwait(false))
            {
                merged.Writer.TryWrite((index, e));
            }
        }).ToArray();
        // A reader ends early only when the client went away, which the loop below sees through RequestAborted.
        _ = Task.WhenAll(readers).ContinueWith(_ => merged.Writer.TryComplete(), TaskScheduler.Default);
        var lasts = new GenerationEvent?[requests.Count];
        await foreach (var (index, e) in merged.Reader.ReadAllAsync(context.RequestAborted).ConfigureAwait(false))
        {
            if (echo is not null && lasts[index] is null)
            {
                // The echoed prompt first (its log-probabilities are complete before the request's first event).
                await Send(Chunk(new JsonObject
                {
                    ["index"] = index, ["text"] = echo.Text,
                    ["logprobs"] = parsed.Sampling.Logprobs is null ? null : CompletionLogprobs([], echo, requests[index].PromptLogprobs),
                    ["finish_reason"] = null,
                })).ConfigureAwait(false);
            }
            lasts[index] = e;
            if (e.Text.Length == 0 && e.Logprobs.Count == 0 && e.FinishReason is null)
            {
                continue;
            }
            var finish = e.FinishReason;
            if (chat)
            {
                if (e.Text.Length > 0 || e.Logprobs.Count > 0)
                {
                    await Send(Chunk(new JsonObject
                    {
                        ["index"] = index, ["delta"] = new JsonObject { ["content"] = e.Text },
                        ["logprobs"] = parsed.ChatLogprobs ? ChatLogprobs(e.Logprobs) : null, ["finish_reason"] = null,
                    })).ConfigureAwait(false);
                }
                if (finish is not null)
                {
                    await Send(Chunk(new JsonObject { ["index"] = index, ["delta"] = new JsonObject(), ["logprobs"] = null, ["finish_reason"] = finish })).ConfigureAwait(false);
                }
            }
            else
            {
                await Send(Chunk(new JsonObject
                {
                    ["index"] = index, ["text"] = e.Text,
                    ["logprobs"] = parsed.Sampling.Logprobs is null ? null : CompletionLogprobs(e.Logprobs, echo, null),
                    ["finish_reason"] = finish,
                })).ConfigureAwait(false);
            }
        }
        if (parsed.IncludeUsage)
        {
            await Send(new JsonObject
            {
                ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = parsed.Model,
                ["choices"] = new JsonArray(), ["usage"] = Usage(requests, lasts),
            }).ConfigureAwait(false);
        }
        await response.WriteAsync("data: [DONE]\n\n", context.RequestAborted).ConfigureAwait(false);
        await response.Body.FlushAsync(context.RequestAborted).ConfigureAwait(false);
    }

    /// <summary>OpenAI's usage: the prompt once, the completion tokens of every choice.</summary>
    private static JsonObject Usage(IReadOnlyList<GenerationRequest> requests, IReadOnlyList<GenerationEvent?> lasts)
    {
        var prompt = requests.Count > 0 ? requests[0].Options.Prompt.Count : 0;
        var completion = lasts.Sum(l => l?.CompletionTokens ?? 0);
        return new JsonObject { ["prompt_tokens"] = prompt, ["completion_tokens"] = completion, ["total_tokens"] = prompt + completion };
    }

    /// <summary>
    /// Completions' legacy <c>logprobs</c> object. With echo, the prompt's tokens come first (the first one with null
    /// <c>token_logprobs</c> and <c>top_logprobs</c>, as OpenAI answers) when <paramref name="prompt"/> is given, and
    /// every generated token's <c>text_offset</c> counts from the start of the echoed prompt.
    /// </summary>
    private static JsonObject CompletionLogprobs(IReadOnlyList<TokenLogprob> logprobs, Echo? echo, IReadOnlyList<PromptLogprob>? prompt)
    {
        var entries = new List<(string Token, float? Logprob, IReadOnlyList<(string Token, float Logprob)>? Top, int Offset)>();
        if (echo is not null && prompt is not null)
        {
            var offset = 0;
            foreach (var p in prompt)
            {
                var token = echo.Tokenizer.Decode([p.Token]);
                entries.Add((token, p.Logprob, p.Logprob is null ? null : p.Top.Select(t => (echo.Tokenizer.Decode([t.Token]), t.Logprob)).ToArray(), offset));
                offset += token.Length;
            }
        }
        var shift = echo?.Text.Length ?? 0;
        entries.AddRange(logprobs.Select(l => (l.Token, (float?)l.Logprob, (IReadOnlyList<(string, float)>?)l.Top, l.TextOffset + shift)));
        return new JsonObject
        {
            ["tokens"] = new JsonArray(entries.Select(l => (JsonNode?)l.Token).ToArray()),
            ["token_logprobs"] = new JsonArray(entries.Select(l => (JsonNode?)l.Logprob).ToArray()),
            ["top_logprobs"] = new JsonArray(entries.Select(l =>
            {
                if (l.Top is null)
                {
                    return null;
                }
                var top = new JsonObject();
                foreach (var (token, logprob) in l.Top)
                {
                    top[token] = logprob;
                }
                return (JsonNode?)top;
            }).ToArray()),
            ["text_offset"] = new JsonArray(entries.Select(l => (JsonNode?)l.Offset).ToArray()),
        };
    }

    private static JsonObject ChatLogprobs(IReadOnlyList<TokenLogprob> logprobs) => new()
    {
        ["content"] = new JsonArray(logprobs.Select(l => (JsonNode?)new JsonObject
        {
            ["token"] = l.Token,
            ["logprob"] = l.Logprob,
            ["bytes"] = Bytes(l.Token),
            ["top_logprobs"] = new JsonArray(l.Top.Select(t => (JsonNode?)new JsonObject
            {
                ["token"] = t.Token, ["logprob"] = t.Logprob, ["bytes"] = Bytes(t.Token),
            }).ToArray()),
        }).ToArray()),
    };

    private static JsonArray Bytes(string token) => new(Encoding.UTF8.GetBytes(token).Select(b => (JsonNode?)(int)b).ToArray());

    private async Task LoadAdapter(HttpContext context)
    {
        var loaded = RequireLoaded();
        var body = await ReadBody(context).ConfigureAwait(false);
        var name = body["lora_name"] is JsonValue n && n.TryGetValue<string>(out var s) && s.Length > 0 ? s : throw OpenAiError.BadField("lora_name", "required: the adapter's model name");
        var path = body["lora_path"] is JsonValue p && p.TryGetValue<string>(out var lp) && lp.Length > 0 ? lp : throw OpenAiError.BadField("lora_path", "required: a PEFT adapter folder");
        if (name == _options.ServedName)
        {
            throw OpenAiError.BadField("lora_name", $"'{name}' is the base model's name; pick another");
        }
        var adapters = loaded.Adapters ?? throw OpenAiError.BadField("lora_path", "LoRA adapters are not supported for a GGUF model (llama.cpp path); serve the safetensors model to use adapters");
        adapters.Load(name, path);
        _log($"adapter {name} loaded from {path}");
        await context.Response.WriteAsync($"Success: LoRA adapter '{name}' added successfully.").ConfigureAwait(false);
    }

    private async Task UnloadAdapter(HttpContext context)
    {
        var loaded = RequireLoaded();
        var body = await ReadBody(context).ConfigureAwait(false);
        var name = body["lora_name"] is JsonValue n && n.TryGetValue<string>(out var s) && s.Length > 0 ? s : throw OpenAiError.BadField("lora_name", "required: the adapter's model name");
        if (loaded.Adapters?.Unload(name) != true)
        {
            throw new OpenAiError(404, $"The lora adapter '{name}' cannot be found.", "lora_name", "model_not_found");
        }
        await context.Response.WriteAsync($"Success: LoRA adapter '{name}' removed successfully.").ConfigureAwait(false);
    }

    private static async Task WriteError(HttpContext context, OpenAiError error)
    {
        context.Response.StatusCode = error.Status;
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(error.ToJson().ToJsonString()).ConfigureAwait(false);
    }
}
