using System.Globalization;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Sources;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Evaluation;

/// <summary><c>eval</c>: sliding-window perplexity of a text (protocol in <see cref="PerplexityEvaluator"/>) and tokens/s.</summary>
public static class EvalVerb
{
    public static EngineResult Run(EvalRequest request, VerbContext context)
    {
        if (!File.Exists(request.Text))
        {
            throw new EngineInputException($"--text: {request.Text} does not exist");
        }
        var device = TorchRuntime.ResolveDevice(request.Device);
        using var http = ModelSource.CreateHttpClient();
        var directory = new ModelSource(http, context.Emit, context.Time).Resolve(request.Model, request.Revision, weights: true);
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        var tokenizer = TokenizerLoader.Load(directory);
        var tokens = Tokens(tokenizer, File.ReadAllText(request.Text), request.MaxTokens);
        using var model = ModelLoading.Load(directory, ModelLoading.ComputeDtype(config, device), device);
        if (request.Adapter is { } adapterDirectory)
        {
            using var adapter = Lora.PeftAdapter.Read(adapterDirectory, device);
            Lora.LoraModel.Apply(model, adapter, device);
            context.Log($"applied LoRA adapter {adapterDirectory}: {adapter.Modules.Count} modules, r {adapter.Settings.R}, scaling {adapter.Scaling}");
        }
        var stride = request.Stride ?? request.Context;
        var result = PerplexityEvaluator.Evaluate(model, tokens, request.Context, stride, device,
            (window, windows) => context.Emit(new ProgressEvent { Stage = "eval", Layer = window, Layers = windows, ElapsedSeconds = Math.Round(context.ElapsedSeconds, 3) }));
        context.Stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"perplexity {result.Perplexity:F4} over {result.TokensScored} tokens (context {result.Context}, stride {result.Stride}, BOS first), {result.TokensPerSecond:F0} tokens/s on {device.type}"));
        return new EngineResult
        {
            Ok = true,
            Verb = EngineVerbs.Eval,
            DurationSeconds = context.ElapsedSeconds,
            Quality = new QualityReport { PerplexityAfter = result.Perplexity },
            Metrics = new Dictionary<string, double>
            {
                ["perplexity"] = result.Perplexity,
                ["meanNll"] = result.MeanNll,
                ["tokensScored"] = result.TokensScored,
                ["tokensPerSecond"] = result.TokensPerSecond,
                ["context"] = result.Context,
                ["stride"] = result.Stride,
            },
            Info = new Dictionary<string, string>
            {
                ["protocol"] = "sliding window; BOS prepended once; each window scores only tokens not scored before",
                ["device"] = device.type.ToString().ToLowerInvariant(),
            },
        };
    }

    /// <summary>BOS (when the tokenizer has one) followed by the text's tokens, truncated to <paramref name="maxTokens"/>.</summary>
    public static IReadOnlyList<int> Tokens(ITextTokenizer tokenizer, string text, int? maxTokens)
    {
        var tokens = new List<int>();
        if (tokenizer.BosId is { } bos)
        {
            tokens.Add(bos);
        }
        tokens.AddRange(tokenizer.Encode(text));
        return maxTokens is { } max && tokens.Count > max ? tokens.GetRange(0, max) : tokens;
    }
}
