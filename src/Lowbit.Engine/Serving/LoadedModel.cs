using System.Text.Json.Nodes;
using Lowbit.Engine.Models;
using Lowbit.Engine.Modules;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>The served model: weights, tokenizer, chat format, the KV slab, the scheduler and the adapters.</summary>
public sealed class LoadedModel : IDisposable
{
    private LoadedModel(LlamaForCausalLM model, ITextTokenizer tokenizer, TokenizerConfig tokenizerConfig, IReadOnlyList<int> eosIds, DecodeBatch batch, ServeScheduler scheduler, LoraSet adapters)
    {
        Model = model;
        Tokenizer = tokenizer;
        TokenizerConfig = tokenizerConfig;
        EosIds = eosIds;
        Batch = batch;
        Scheduler = scheduler;
        Adapters = adapters;
        ChatFormat = ChatTemplates.Detect(tokenizerConfig.ChatTemplate);
    }

    public LlamaForCausalLM Model { get; }

    public ITextTokenizer Tokenizer { get; }

    public TokenizerConfig TokenizerConfig { get; }

    public ChatFormat ChatFormat { get; }

    public IReadOnlyList<int> EosIds { get; }

    public DecodeBatch Batch { get; }

    public ServeScheduler Scheduler { get; }

    public LoraSet Adapters { get; }

    public static LoadedModel Load(ServeOptions options, ServeMetrics metrics, TimeProvider time, Action<string> log, Action<Exception> onFailure)
    {
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
        var model = ModelLoading.Load(directory, dtype, options.Device);
        model.eval();
        var adapters = new LoraSet(model, options.Device);
        DecodeBatch? batch = null;
        try
        {
            batch = new DecodeBatch(model, options.MaxConcurrency, options.MaxContext, options.Device);
            var scheduler = new ServeScheduler(batch, tokenizer, new SchedulerOptions
            {
                MaxConcurrency = options.MaxConcurrency,
                MaxContext = options.MaxContext,
                PrefillChunk = options.PrefillChunk,
            }, metrics, time, onFailure)
            {
                BeforeStep = adapters.SelectRows,
                BeforePrefill = adapter => adapters.SelectRows([adapter]),
            };
            adapters.RunOnLoop = scheduler.RunOnLoop;
            foreach (var (name, path) in options.Adapters)
            {
                adapters.Load(name, path);
                log($"adapter {name} loaded from {path}");
            }
            var eosIds = EosIdsOf(directory, tokenizer).Concat(config.EosTokenIds).Distinct().Order().ToArray();
            return new LoadedModel(model, tokenizer, tokenizerConfig, eosIds, batch, scheduler, adapters);
        }
        catch
        {
            batch?.Dispose();
            model.Dispose();
            throw;
        }
    }

    /// <summary>Prompt ids (BOS when the tokenizer config asks), extra stop strings and stop ids for a request.</summary>
    public (IReadOnlyList<int> Prompt, IReadOnlyList<string> Stops, IReadOnlyList<int> StopIds) Tokenize(ParsedRequest request)
    {
        if (request.PromptTokens is { } ids)
        {
            if (ids.FirstOrDefault(i => i < 0 || i >= Model.Config.VocabSize) is var bad && ids.Any(i => i < 0 || i >= Model.Config.VocabSize))
            {
                throw OpenAiError.BadField("prompt", $"token id {bad} is outside the vocabulary 0..{Model.Config.VocabSize - 1}");
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
        Adapters.Dispose();
        Model.Dispose();
    }
}
