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
            ["a.weight"] = torch.arange(Scalars.Of(12), dtype: torch.ScalarType.Float32).reshape(3, 4),
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

    /// <summary>Seed datasets per format, each a few valid lines (the fine-tune readers, issue 17 item 8).</summary>
    public static TheoryData<string, string, string> Datasets => new()
    {
        { "alpaca", "a.jsonl", "{\"instruction\": \"Say hi\", \"input\": \"to Ann\", \"output\": \"Hi Ann!\"}\n{\"instruction\": \"Add\", \"output\": \"2\"}\n" },
        { "chat", "c.jsonl", "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello\"}]}\n" },
        { "text", "t.jsonl", "{\"text\": \"The quick brown fox.\"}\n\n{\"text\": \"jumps over\"}\n" },
        { "text", "t.txt", "The quick brown fox jumps over the lazy dog.\nA second line, \u00e9\u00e8 and \u4e2d.\n" },
    };

    [Theory]
    [MemberData(nameof(Datasets))]
    public void Does_answer_every_mutated_fine_tune_dataset_with_packed_examples_or_a_named_input_error(string format, string name, string seedText)
    {
        var tokenizer = new Tokenization.ByteTokenizer();
        var datasetFormat = Enum.Parse<Protocol.DatasetFormat>(format, ignoreCase: true);
        var path = _dir.File(name);
        var chats = Enum.GetValues<Tokenization.ChatFormat>();
        var run = Fuzzer.Run(Encoding.UTF8.GetBytes(seedText), 23 + name.Length, input =>
        {
            File.WriteAllBytes(path, input);
            var examples = Training.FineTuneDataset.Read(path, datasetFormat, tokenizer, chats[input.Length % chats.Length]);
            Training.FineTuneDataset.Pack(examples, 64, datasetFormat, 0);
        }, ex => ex is EngineInputException, cases: 2000);
        Assert.True(run >= 50);
    }

    [Theory]
    [InlineData("cal.jsonl", "{\"text\": \"The quick brown fox jumps over the lazy dog again and again.\"}\n{\"text\": \"A second calibration line.\"}\n")]
    [InlineData("cal.txt", "The quick brown fox jumps over the lazy dog again and again, and once more.\n")]
    public void Does_answer_every_mutated_calibration_dataset_with_tokens_or_a_named_input_error(string name, string seedText)
    {
        var tokenizer = new Tokenization.ByteTokenizer();
        var path = _dir.File(name);
        var request = new Protocol.QuantizeRequest { Model = "m", Method = Protocol.QuantizationMethod.Gptq, Bits = 4, Out = "o", Calibration = path, CalibrationLength = 16 };
        var run = Fuzzer.Run(Encoding.UTF8.GetBytes(seedText), 29 + name.Length, input =>
        {
            File.WriteAllBytes(path, input);
            using var tokens = Lowbit.Engine.Quantization.QuantizeVerb.CalibrationTokens(tokenizer, request);
        }, ex => ex is EngineInputException, cases: 2000);
        Assert.True(run >= 50);
    }
}
