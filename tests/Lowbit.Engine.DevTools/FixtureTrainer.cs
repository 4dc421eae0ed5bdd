using System.Diagnostics;
using System.Text;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>Options of the tiny test model's training run (<c>lowbit-engine train-fixture</c>).</summary>
public sealed record FixtureTrainingOptions
{
    public required string TrainText { get; init; }

    public required string EvalText { get; init; }

    public required string Out { get; init; }

    public int Steps { get; init; } = 1000;

    public int BatchSize { get; init; } = 16;

    /// <summary>Training window; evaluation contexts up to this length see only trained positions.</summary>
    public int SequenceLength { get; init; } = 512;

    public double LearningRate { get; init; } = 3e-3;

    public int WarmupSteps { get; init; } = 60;

    public long Seed { get; init; } = 20261122;

    /// <summary>Where to train (the committed fixture was trained on CUDA through the GPU bundle).</summary>
    public Device Device { get; init; } = CPU;

    /// <summary>The stored dtype of model.safetensors (float16 keeps the fixture small; weights are far inside its range).</summary>
    public ScalarType StoreAs { get; init; } = ScalarType.Float16;

    /// <summary>The architecture: 4 layers, hidden 256 (divisible by GGUF's 256-element k-quant blocks), GQA 4:2, byte vocab.</summary>
    public LlamaConfig Config { get; init; } = new()
    {
        VocabSize = ByteTokenizer.Size, HiddenSize = 256, IntermediateSize = 768, NumHiddenLayers = 4, NumAttentionHeads = 4,
        NumKeyValueHeads = 2, HeadDim = 64, MaxPositionEmbeddings = 512, RmsNormEps = 1e-5, RopeTheta = 10000,
        BosTokenId = ByteTokenizer.Bos, EosTokenIds = [ByteTokenizer.Eos], PadTokenId = ByteTokenizer.Pad, TorchDtype = "float32",
    };
}

/// <summary>
/// Trains the tiny byte-level Llama fixture with the engine's own forward pass and TorchSharp autograd: AdamW
/// (β 0.9/0.95, weight decay 0.1), linear warm-up then cosine decay, gradient clipping at 1, random windows of the
/// training text, fixed seed. Writes the model in Hugging Face layout with its tokenizer and README numbers.
/// </summary>
public static class FixtureTrainer
{
    public static PerplexityResult Train(FixtureTrainingOptions options, TextWriter progress)
    {
        random.manual_seed(options.Seed);
        var tokenizer = new ByteTokenizer();
        var train = tokenizer.Encode(File.ReadAllText(options.TrainText)).Select(t => (long)t).ToArray();
        var config = options.Config;
        var device = options.Device;
        using var model = new LlamaForCausalLM(config, ScalarType.Float32, device);
        ModelIo.InitializeRandom(model, options.Seed);
        model.train();
        using var optimizer = optim.AdamW(model.parameters(), options.LearningRate, 0.9, 0.95, 1e-8, 0.1);
        var rng = new Random((int)options.Seed);
        var watch = Stopwatch.StartNew();
        var window = options.SequenceLength + 1;
        for (var step = 1; step <= options.Steps; step++)
        {
            var lr = step <= options.WarmupSteps
                ? options.LearningRate * step / options.WarmupSteps
                : options.LearningRate * (0.1 + 0.9 * 0.5 * (1 + Math.Cos(Math.PI * (step - options.WarmupSteps) / (options.Steps - options.WarmupSteps))));
            foreach (var group in optimizer.ParamGroups)
            {
                group.LearningRate = lr;
            }
            using var scope = NewDisposeScope();
            var batch = new long[options.BatchSize * window];
            for (var b = 0; b < options.BatchSize; b++)
            {
                // Every window starts with BOS, as evaluation and generation prompts do.
                var start = rng.Next(0, train.Length - window);
                batch[b * window] = ByteTokenizer.Bos;
                Array.Copy(train, start, batch, b * window + 1, window - 1);
            }
            var data = tensor(batch, [options.BatchSize, window], device: device);
            var input = data.narrow(1, 0, options.SequenceLength);
            var target = data.narrow(1, 1, options.SequenceLength);
            var logits = model.forward(input, null);
            var loss = nn.functional.cross_entropy(logits.reshape(-1, config.VocabSize), target.reshape(-1));
            optimizer.zero_grad();
            loss.backward();
            nn.utils.clip_grad_norm_(model.parameters(), 1.0);
            optimizer.step();
            if (step % 20 == 0 || step == 1 || step == options.Steps)
            {
                var elapsed = watch.Elapsed.TotalSeconds;
                progress.WriteLine(new TrainEvent
                {
                    Step = step,
                    TotalSteps = options.Steps,
                    Epoch = (double)step * options.BatchSize * options.SequenceLength / train.Length,
                    Loss = loss.item<float>(),
                    TokensPerSecond = step * options.BatchSize * options.SequenceLength / elapsed,
                    LearningRate = lr,
                }.ToJsonLine());
            }
        }
        model.eval();
        var trainSeconds = watch.Elapsed.TotalSeconds;
        ModelIo.Save(model, options.Out, options.StoreAs);
        File.WriteAllText(Path.Combine(options.Out, "tokenizer.json"), ByteTokenizer.TokenizerJson());
        File.WriteAllText(Path.Combine(options.Out, "tokenizer_config.json"), ByteTokenizer.TokenizerConfigJson());
        File.WriteAllText(Path.Combine(options.Out, "generation_config.json"),
            $"{{\n  \"bos_token_id\": {ByteTokenizer.Bos},\n  \"eos_token_id\": {ByteTokenizer.Eos},\n  \"pad_token_id\": {ByteTokenizer.Pad}\n}}\n");
        var evalTokens = new List<int> { ByteTokenizer.Bos };
        evalTokens.AddRange(tokenizer.Encode(File.ReadAllText(options.EvalText)));
        // The reported perplexity is that of the stored (rounded) weights, evaluated in float32 on the training device.
        using var checkpoint = Checkpoint.Open(options.Out);
        using var stored = ModelIo.Load(checkpoint, ScalarType.Float32, device);
        var result = PerplexityEvaluator.Evaluate(stored, evalTokens, 256, 128, device);
        progress.WriteLine(new LogEvent
        {
            Level = "info",
            Message = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"trained {options.Steps} steps in {trainSeconds:F0} s; eval perplexity {result.Perplexity:F4} over {result.TokensScored} tokens (context 256, stride 128)"),
        }.ToJsonLine());
        return result;
    }

    /// <summary>Strips the verse references (<c>Ge1:1 </c>) from the output of Debian's <c>bible</c> program.</summary>
    public static string CleanBibleText(string raw)
    {
        var text = new StringBuilder();
        foreach (var line in raw.Split('\n'))
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            if (space > 0 && line[..space].Contains(':', StringComparison.Ordinal))
            {
                text.Append(line.AsSpan(space + 1)).Append('\n');
            }
            else if (line.Length > 0)
            {
                text.Append(line).Append('\n');
            }
        }
        return text.ToString();
    }
}
