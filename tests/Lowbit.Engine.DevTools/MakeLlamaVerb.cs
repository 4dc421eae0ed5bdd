using System.Globalization;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// <c>make-llama --out DIR [--layers 32] [--hidden 64] [--intermediate 172] [--heads 4] [--kv-heads 4] [--vocab 1000]
/// [--seed 1]</c>: a random Llama (transformers' normal(0, 0.02) init, float32 safetensors, no tokenizer) of a chosen
/// shape, e.g. the 7B's structure (32 layers, all seven projections) at tiny widths, so <c>bench-finetune</c> on the
/// CPU measures the per-step host overhead (op dispatch, autograd nodes) with negligible arithmetic.
/// </summary>
internal static class MakeLlamaVerb
{
    public static int Run(string[] args, TextWriter stdout)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int Int(string flag, int fallback) => Get(flag) is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : fallback;
        var output = Get("--out") ?? throw new ProtocolArgumentException("--out", "required", "an output directory");
        var hidden = Int("--hidden", 64);
        var heads = Int("--heads", 4);
        if (hidden % heads != 0)
        {
            throw new ProtocolArgumentException("--heads", $"{heads} heads do not divide --hidden {hidden}", "a divisor of --hidden");
        }
        var config = new LlamaConfig
        {
            VocabSize = Int("--vocab", 1000),
            HiddenSize = hidden,
            IntermediateSize = Int("--intermediate", 172),
            NumHiddenLayers = Int("--layers", 32),
            NumAttentionHeads = heads,
            NumKeyValueHeads = Int("--kv-heads", heads),
            HeadDim = hidden / heads,
            MaxPositionEmbeddings = 4096,
            RmsNormEps = 1e-5,
            BosTokenId = 1,
            EosTokenIds = [2],
        };
        using var model = new LlamaForCausalLM(config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, Int("--seed", 1));
        ModelIo.Save(model, output);
        stdout.WriteLine($"make-llama: {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, {config.ParameterCount:N0} parameters in {output}");
        return 0;
    }
}
