using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

/// <summary>A tiny random Llama saved in HF layout, for pipeline and export tests.</summary>
internal static class TinyModels
{
    public static LlamaConfig Config { get; } = new()
    {
        VocabSize = 96,
        HiddenSize = 64,
        IntermediateSize = 128,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        NumKeyValueHeads = 2,
        HeadDim = 16,
        MaxPositionEmbeddings = 128,
        RmsNormEps = 1e-5,
        BosTokenId = 1,
        EosTokenIds = [2],
    };

    public static string Save(string directory, long seed = 1)
    {
        using var model = new LlamaForCausalLM(Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, seed, std: 0.1);
        ModelIo.Save(model, directory);
        return directory;
    }

    /// <summary>A random model with the engine's byte tokenizer (vocab 260), so text verbs can run on it.</summary>
    public static string SaveWithByteTokenizer(string directory, long seed = 1, int layers = 2, bool tied = false)
    {
        var config = Config with { VocabSize = Lowbit.Engine.Tokenization.ByteTokenizer.Size, BosTokenId = 256, EosTokenIds = [257], NumHiddenLayers = layers, TieWordEmbeddings = tied };
        using var model = new LlamaForCausalLM(config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, seed, std: 0.1);
        ModelIo.Save(model, directory);
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), Lowbit.Engine.Tokenization.ByteTokenizer.TokenizerJson());
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), Lowbit.Engine.Tokenization.ByteTokenizer.TokenizerConfigJson());
        return directory;
    }

    public static Tensor Tokens(long samples, long length, ulong seed) =>
        torch.randint(3, Config.VocabSize, [samples, length], generator: new torch.Generator(seed), dtype: ScalarType.Int64);
}
