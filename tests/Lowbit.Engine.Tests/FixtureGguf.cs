using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Quantization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

/// <summary>The trained fixture exported to GGUF the way <c>quantize --formats gguf-*</c> does, for the llama.cpp tests.</summary>
internal static class FixtureGguf
{
    /// <summary>Writes <c>model-{type}.gguf</c> into <paramref name="dir"/> and returns its path.</summary>
    public static string Export(TempDir dir, GgmlType type)
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        string Read(string file) => File.ReadAllText(Path.Combine(TokenizerTests.FixtureDirectory, file));
        var tensors = checkpoint.TensorNames.Order(StringComparer.Ordinal)
            .Select(n => new KeyValuePair<string, Func<Tensor>>(n, () => checkpoint.Load(n, ScalarType.Float32)));
        var path = dir.File($"model-{type}.gguf");
        GgufLlamaExport.Write(path, Read("config.json"), Read("tokenizer.json"), Read("tokenizer_config.json"), QuantizeVerb.Ordered(tensors), type);
        return path;
    }
}
