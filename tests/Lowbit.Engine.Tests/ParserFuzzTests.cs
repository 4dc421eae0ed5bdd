using System.Text;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Testing;
using TorchSharp;

namespace Lowbit.Engine.Tests;

/// <summary>Seeded fuzzing of the engine's parsers of outside input (issue 17, item 8): no crash, no hang, a named error.</summary>
public sealed class ParserFuzzTests : IDisposable
{
    private readonly TempDir _dir = new();

    public void Dispose() => _dir.Dispose();

    [Fact]
    public void Does_answer_every_mutated_safetensors_file_with_its_tensors_or_a_named_input_error()
    {
        var seedPath = _dir.File("seed.safetensors");
        SafetensorsWriter.Write(seedPath, new Dictionary<string, torch.Tensor>
        {
            ["a.weight"] = torch.arange(12, dtype: torch.ScalarType.Float32).reshape(3, 4),
            ["b.bias"] = torch.ones(5, dtype: torch.ScalarType.Float16),
        }, new Dictionary<string, string> { ["format"] = "pt" });
        var seed = File.ReadAllBytes(seedPath);
        var path = _dir.File("case.safetensors");
        var run = Fuzzer.Run(seed, 17, input =>
        {
            File.WriteAllBytes(path, input);
            using var file = SafetensorsFile.Open(path);
            foreach (var name in file.Tensors.Keys)
            {
                using var t = file.Load(name, torch.ScalarType.Float32);
            }
        }, ex => ex is EngineInputException, cases: 1500);
        Assert.True(run >= 50);
    }

    [Fact]
    public void Does_answer_every_mutated_config_json_with_a_config_or_a_named_input_error()
    {
        var seed = File.ReadAllBytes(Path.Combine(TokenizerTests.FixtureDirectory, "config.json"));
        var run = Fuzzer.Run(seed, 18, input => LlamaConfig.Parse(Encoding.UTF8.GetString(input)), ex => ex is EngineInputException);
        Assert.True(run >= 50);
    }

    [Fact]
    public void Does_answer_every_mutated_gguf_file_with_its_tensors_or_invalid_data()
    {
        using var stream = new MemoryStream();
        var random = new Random(3);
        var weights = Enumerable.Range(0, 256).Select(_ => (float)random.NextDouble() - 0.5f).ToArray();
        GgufWriter.Write(stream,
            [
                new("general.architecture", GgufValue.Of("llama")),
                new("llama.block_count", GgufValue.Of(1u)),
                new("tokenizer.ggml.tokens", GgufValue.Strings(["a", "b", "ü"])),
            ],
            [
                new GgufTensor("blk.0.ffn_down.weight", [256, 1], GgmlType.Q8_0, () => GgmlQuants.Encode(GgmlType.Q8_0, weights)),
                new GgufTensor("output_norm.weight", [3], GgmlType.F32, () => GgmlQuants.Encode(GgmlType.F32, [1f, 2f, 3f])),
            ]);
        var run = Fuzzer.Run(stream.ToArray(), 19, input =>
        {
            var file = GgufFile.Parse(input);
            foreach (var tensor in file.Tensors)
            {
                file.Dequantize(tensor.Name);
            }
        }, ex => ex is InvalidDataException);
        Assert.True(run >= 50);
    }
}
