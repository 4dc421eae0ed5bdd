using System.Globalization;
using System.Text.Json.Nodes;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Network;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>The served model: weights, tokenizer, chat format, the KV slab, the scheduler and the adapters.</summary>
public sealed class LoadedModel : IDisposable
{
    private readonly IDisposable? _weights;

    private LoadedModel(LlamaForCausalLM? model, ITextTokenizer tokenizer, TokenizerConfig tokenizerConfig, IReadOnlyList<int> eosIds, IDecodeBackend batch, ServeScheduler scheduler, LoraSet? adapters, IDisposable? weights = null)
    {
        Model = model;
        _weights = weights;
        VocabSize = model?.Config.VocabSize ?? tokenizer.VocabSize;
        Tokenizer = tokenizer;
        TokenizerConfig = tokenizerConfig;
        EosIds = eosIds;
        Batch = batch;
        Scheduler = scheduler;
        Adapters = adapters;
        ChatFormat = ChatTemplates.Detect(tokenizerConfig.ChatTemplate);
    }

    /// <summary>The TorchSharp model; null on the GGUF (llama.cpp) path.</summary>
    public LlamaForCausalLM? Model { get; }

    public int VocabSize { get; }

    public ITextTokenizer Tokenizer { get; }

    public TokenizerConfig TokenizerConfig { get; }

    public ChatFormat ChatFormat { get; }

    public IReadOnlyList<int> EosIds { get; }

    public IDecodeBackend Batch { get; }

    public ServeScheduler Scheduler { get; }

    /// <summary>LoRA adapters of the TorchSharp path; null on the GGUF path (its adapters live in <see cref="LlamaCppBackend"/>).</summary>
    public LoraSet? Adapters { get; }

    /// <summary>The adapter row a request naming <paramref name="name"/> runs with (either path), or null.</summary>
    public int? AdapterRowOf(string name) => Adapters?.RowOf(name) ?? (Batch as LlamaCppBackend)?.RowOf(name);

    /// <summary>Loaded adapters by name and path (either path).</summary>
    public IReadOnlyList<(string Name, string Path)> LoadedAdapters => Adapters?.Loaded ?? (Batch as LlamaCppBackend)?.Adapters ?? [];

    public static LoadedModel Load(ServeOptions options, ServeMetrics metrics, TimeProvider time, Action<string> log, Action<Exception> onFailure)
    {
        if (GgufPath(options.ModelDirectory) is { } gguf)
        {
            return LoadGguf(gguf, options, metrics, time, log, onFailure);
        }
        var directory = options.ModelDirectory;
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        var hasTokenizer = File.Exists(Path.Combine(directory, "tokenizer.json")) || File.Exists(Path.Combine(directory, "tokenizer.model"));
        ITextTokenizer tokenizer = hasTokenizer ? TokenizerLoader.Load(directory) : new TokenIdTokenizer(config.VocabSize, config.BosTokenId, config.EosTokenIds.Count > 0 ? config.EosTokenIds[0] : null);
        if (!hasTokenizer)
        {
            log($"{directory} has no tokenizer: prompts must be token ids");
        }
        var tokenizerConfig = TokenizerConfig.Load(directory);
        var dtype = ModelLoading.ComputeDtype(config, options.Device);
        var plan = options.ShardDevices.Count > 0
            ? PipelinePlacement.Plan(directory, config, dtype, options.MaxConcurrency, options.MaxContext + 1, options.ShardDevices)
            : null;
        if (plan is not null)
        {
            // Before the weights load, so a shard that does not fit shows what it was given.
            log($"pipeline split: {plan.Stages.Count} shards on {string.Join(",", plan.Devices.Select(PipelinePlacement.Name))} (--shards; balanced by weight + KV cache bytes)");
            for (var s = 0; s < plan.Stages.Count; s++)
            {
                log(plan.Describe(s));
            }
        }
        // A split model reads each projection onto its shard's device (the embedding and norms move after).
        var model = plan is null ? ModelLoading.Load(directory, dtype, options.Device) : PipelinePlacement.Load(directory, dtype, plan);
        model.eval();
        var device = plan?.Devices[0] ?? options.Device;
        FastDecodeBackend? batch = null;
        LoraSet? adapters = null;
        try
        {
            if (plan is not null)
            {
                PipelinePlacement.Place(model, plan);
            }
            adapters = new LoraSet(model, device, layerDevice: plan is null ? null : plan.LayerDevice);
            batch = new FastDecodeBackend(model, options.MaxConcurrency, options.MaxContext, device, adapters,
                plan is null ? null : new FastDecoderOptions { MaxBatch = options.MaxConcurrency, MaxLength = options.MaxContext + 1, Shards = plan.DecoderShards });
            log($"decode path: {batch.Describe()}");
            var cudaIndex = options.Device.type == TorchSharp.DeviceType.CUDA ? Math.Max(0, (int)options.Device.index) : -1;
            if (cudaIndex >= 0 && CudaMemory.Stats(cudaIndex) is { } fused)
            {
                log($"memory before graphs: {fused}");
            }
            if (batch.CaptureGraphs() > 0)
            {
                log($"decode graphs: {batch.GraphSummary()} (every batch × length bucket, before the first request)");
            }
            else if (batch.Decoder.GraphFailure is { } failure)
            {
                log($"decode graphs: capture failed ({failure}); decoding without CUDA graphs, with the same kernels: slower per token at small batches");
            }
            if (cudaIndex >= 0 && CudaMemory.Stats(cudaIndex) is { } built && CudaMemory.EmptyCache())
            {
                // The pre-fusion weights (and a quantized model's replaced dense linears) were freed into the caching
                // allocator, which would keep them reserved (docs/planner.md, "Our engine on the H200").
                log($"memory after load: {built}; cached blocks returned to the driver, now {CudaMemory.Stats(cudaIndex)}");
            }
            var scheduler = new ServeScheduler(batch, tokenizer, new SchedulerOptions
            {
                MaxConcurrency = options.MaxConcurrency,
                MaxContext = options.MaxContext,
                PrefillChunk = options.PrefillChunk,
            }, metrics, time, onFailure)
            {
                BeforeStep = batch.SelectAdapters,
            };
            adapters.RunOnLoop = scheduler.RunOnLoop;
            foreach (var (name, path) in options.Adapters)
            {
                adapters.Load(name, path);
                log($"adapter {name} loaded from {path}");
            }
            log($"prefill budget: {options.PrefillChunk} tokens per iteration (--max-num-batched-tokens)");
            if (options.WarmUp)
            {
                var phases = WarmUpMemoryReport(scheduler, cudaIndex);
                var warm = scheduler.WarmUpAsync().GetAwaiter().GetResult();
                if (phases.Count > 0)
                {
                    log($"warm-up memory (allocator peak of each part over the loaded model, GiB; the ready line's peaks are the last part's): {string.Join("; ", phases)}");
                }
                log(string.Create(CultureInfo.InvariantCulture,
                    $"warm-up: a prefill of {warm.PrefillTokens} dummy tokens over {warm.PrefillChunks} slots, a decode step of {warm.DecodeRows} rows and the sampler in {warm.Seconds:F2} s (slots cleared before ready)"));
            }
            if (cudaIndex >= 0 && CudaMemory.Stats(cudaIndex) is { } ready)
            {
                log($"memory at ready: {ready}");
            }
            foreach (var gpu in plan?.Devices.Where(d => d.type == TorchSharp.DeviceType.CUDA).Select(d => Math.Max(0, (int)d.index)).Distinct().Where(i => i != cudaIndex) ?? [])
            {
                if (CudaMemory.Stats(gpu) is { } other)
                {
                    log($"memory at ready on cuda:{gpu}: {other}");
                }
            }
            var eosIds = EosIdsOf(directory, tokenizer).Concat(config.EosTokenIds).Distinct().Order().ToArray();
            return new LoadedModel(model, tokenizer, tokenizerConfig, eosIds, batch, scheduler, adapters);
        }
        catch
        {
            batch?.Dispose();
            adapters?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>The environment variable that turns on the per-part warm-up memory report (calibrate-lowbit.sh sets it).</summary>
    public const string WarmUpMemoryEnv = "LOWBIT_WARMUP_MEMORY";

    /// <summary>
    /// With <see cref="WarmUpMemoryEnv"/>=1 on a GPU: the allocator's peak in each part of the warm-up, over what the loaded
    /// model holds (filled as the warm-up runs; each part starts the peak afresh, so the ready line's peaks are then those
    /// of the last part only). Empty otherwise. For the planner's activation and logits terms (docs/planner.md).
    /// </summary>
    private static List<string> WarmUpMemoryReport(ServeScheduler scheduler, int cudaIndex)
    {
        var phases = new List<string>();
        if (cudaIndex < 0 || Environment.GetEnvironmentVariable(WarmUpMemoryEnv) != "1" || CudaMemory.Stats(cudaIndex) is not { } start || !CudaMemory.ResetPeak(cudaIndex))
        {
            return phases;
        }
        scheduler.WarmUpPhase = phase =>
        {
            if (CudaMemory.Stats(cudaIndex) is { } now)
            {
                phases.Add(string.Create(CultureInfo.InvariantCulture, $"{phase} +{(now.PeakAllocated - start.Allocated) / (double)(1L << 30):F3}"));
                CudaMemory.ResetPeak(cudaIndex);
            }
        };
        return phases;
    }

    /// <summary>
    /// The GGUF file to serve through llama.cpp: <paramref name="model"/> itself when it is a .gguf file, or the one
    /// .gguf file of a folder without safetensors weights; null for a safetensors model.
    /// </summary>
    public static string? GgufPath(string model)
    {
        if (File.Exists(model))
        {
            return model.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? model
                : throw new EngineInputException($"--model: {model} is a file but not a .gguf file; pass a .gguf file or a model folder");
        }
        if (!Directory.Exists(model) || Directory.EnumerateFiles(model, "*.safetensors").Any())
        {
            return null;
        }
        var files = Directory.GetFiles(model, "*.gguf").Order(StringComparer.Ordinal).ToArray();
        return files.Length switch
        {
            0 => null,
            1 => files[0],
            _ => throw new EngineInputException($"--model: {model} holds {files.Length} .gguf files ({string.Join(", ", files.Select(Path.GetFileName))}); pass one of them as --model"),
        };
    }

    private static LoadedModel LoadGguf(string path, ServeOptions options, ServeMetrics metrics, TimeProvider time, Action<string> log, Action<Exception> onFailure)
    {
        foreach (var (name, adapterPath) in options.Adapters)
        {
            LlamaCppBackend.AdapterFile(name, adapterPath);   // a PEFT folder without adapter.gguf fails before the model loads
        }
        if (options.Device.type != TorchSharp.DeviceType.CPU)
        {
            log("GGUF models run on llama.cpp's CPU backend (LLamaSharp.Backend.Cpu); --device is ignored");
        }
        var weights = LLama.LLamaWeights.LoadFromFile(LlamaCppBackend.ContextParameters(path, options.MaxConcurrency, options.MaxContext, options.PrefillChunk));
        LlamaCppBackend? backend = null;
        try
        {
            var tokenizer = new LlamaCppTokenizer(weights);
            weights.Metadata.TryGetValue("tokenizer.chat_template", out var template);
            var tokenizerConfig = new TokenizerConfig
            {
                AddBosToken = weights.Vocab.ShouldAddBOS,
                BosToken = tokenizer.BosId is { } bos ? weights.Vocab.LLamaTokenToString(bos, true) : null,
                ChatTemplate = template,
            };
            backend = new LlamaCppBackend(weights, path, options.MaxConcurrency, options.MaxContext, options.PrefillChunk);
            foreach (var (name, adapterPath) in options.Adapters)
            {
                backend.LoadAdapter(name, adapterPath);
                log($"adapter {name} loaded into llama.cpp from {LlamaCppBackend.AdapterFile(name, adapterPath)}");
            }
            var scheduler = new ServeScheduler(backend, tokenizer, new SchedulerOptions
            {
                MaxConcurrency = options.MaxConcurrency,
                MaxContext = options.MaxContext,
                PrefillChunk = options.PrefillChunk,
            }, metrics, time, onFailure)
            {
                BeforeStep = backend.SelectAdapters,
                BeforePrefill = backend.SelectPrefillAdapter,
            };
            int[] eosIds = tokenizer.EosId is { } eos ? [eos] : [];
            if (weights.Vocab.EOT is { } eot && !eosIds.Contains((int)eot))
            {
                eosIds = [.. eosIds, (int)eot];
            }
            log($"GGUF {Path.GetFileName(path)} loaded in llama.cpp ({weights.SizeInBytes / (1 << 20)} MiB, {tokenizer.VocabSize} tokens)");
            return new LoadedModel(null, tokenizer, tokenizerConfig, eosIds, backend, scheduler, null, weights);
        }
        catch
        {
            backend?.Dispose();
            weights.Dispose();
            throw;
        }
    }

    /// <summary>Prompt ids (BOS when the tokenizer config asks), extra stop strings and stop ids for a request.</summary>
    public (IReadOnlyList<int> Prompt, IReadOnlyList<string> Stops, IReadOnlyList<int> StopIds) Tokenize(ParsedRequest request)
    {
        if (request.PromptTokens is { } ids)
        {
            if (ids.FirstOrDefault(i => i < 0 || i >= VocabSize) is var bad && ids.Any(i => i < 0 || i >= VocabSize))
            {
                throw OpenAiError.BadField("prompt", $"token id {bad} is outside the vocabulary 0..{VocabSize - 1}");
            }
            return (ids, [], EosIds);
        }
        var text = request.PromptText ?? ChatTemplates.Render(ChatFormat, request.Messages!, addGenerationPrompt: true);
        var prompt = new List<int>();
        var addBos = TokenizerConfig.AddBosToken && Tokenizer.BosId is not null
            && !(TokenizerConfig.BosToken is { Length: > 0 } bosText && text.StartsWith(bosText, StringComparison.Ordinal));
        if (addBos)
        {
            prompt.Add(Tokenizer.BosId!.Value);
        }
        prompt.AddRange(Tokenizer.Encode(text));
        IReadOnlyList<string> stops = request.Messages is null ? [] : ChatTemplates.StopStrings(ChatFormat);
        return (prompt, stops, EosIds);
    }

    private static int[] EosIdsOf(string directory, ITextTokenizer tokenizer)
    {
        var ids = new HashSet<int>();
        if (tokenizer.EosId is { } eos)
        {
            ids.Add(eos);
        }
        var path = Path.Combine(directory, "generation_config.json");
        if (File.Exists(path) && JsonNode.Parse(File.ReadAllText(path)) is JsonObject generation)
        {
            switch (generation["eos_token_id"])
            {
                case JsonValue v when v.TryGetValue<int>(out var id):
                    ids.Add(id);
                    break;
                case JsonArray list:
                    foreach (var item in list)
                    {
                        if (item is JsonValue iv && iv.TryGetValue<int>(out var i))
                        {
                            ids.Add(i);
                        }
                    }
                    break;
            }
        }
        return ids.Order().ToArray();
    }

    public void Dispose()
    {
        Scheduler.Dispose();
        Batch.Dispose();
        Adapters?.Dispose();
        Model?.Dispose();
        _weights?.Dispose();
    }
}
