using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>Options of a whole-model quantization timing run on generated weights.</summary>
public sealed record QuantBenchOptions
{
    public required LlamaConfig Config { get; init; }

    public IReadOnlyList<QuantMethod> Methods { get; init; } = [QuantMethod.Rtn, QuantMethod.Hqq, QuantMethod.Gptq];

    public int Bits { get; init; } = 4;

    public int GroupSize { get; init; } = 64;

    public int CalibrationSamples { get; init; } = 128;

    public int CalibrationLength { get; init; } = 2048;

    public Device Device { get; init; } = CPU;
}

/// <summary>One method's whole-model timing.</summary>
public sealed record QuantBenchResult(string Method, int Bits, int GroupSize, int Layers, double Seconds, long Parameters, double MeanRelativeError)
{
    public double ParametersPerSecond => Parameters / Math.Max(Seconds, 1e-9);
}

/// <summary>
/// Times RTN/HQQ/GPTQ over every decoder projection of a randomly initialised model (bf16-rounded weights
/// generated on the device per layer), e.g. a 7B-shaped Llama on one GPU. <c>lowbit-engine bench-quant</c> runs it.
/// </summary>
public static class QuantBench
{
    /// <summary>Llama-2-7B's shape.</summary>
    public static LlamaConfig Llama7B { get; } = new()
    {
        VocabSize = 32000,
        HiddenSize = 4096,
        IntermediateSize = 11008,
        NumHiddenLayers = 32,
        NumAttentionHeads = 32,
        NumKeyValueHeads = 32,
        HeadDim = 128,
        MaxPositionEmbeddings = 4096,
        RmsNormEps = 1e-5,
    };

    public static IEnumerable<QuantBenchResult> Run(QuantBenchOptions options, Action<string>? log = null)
    {
        var source = new RandomWeights(options.Config);
        foreach (var method in options.Methods)
        {
            using var calibration = method == QuantMethod.Gptq
                ? torch.randint(0, options.Config.VocabSize, [options.CalibrationSamples, options.CalibrationLength], generator: new Generator(7), dtype: ScalarType.Int64)
                : null;
            Synchronize(options.Device);
            var watch = Stopwatch.StartNew();
            using var model = ModelQuantizer.Quantize(source, new ModelQuantizeOptions
            {
                Method = method,
                Bits = options.Bits,
                GroupSize = options.GroupSize,
                Calibration = calibration,
                Device = options.Device,
            }, (done, total) => log?.Invoke($"{method} layer {done}/{total} {watch.Elapsed.TotalSeconds:F1}s"));
            Synchronize(options.Device);
            var seconds = watch.Elapsed.TotalSeconds;
            yield return new QuantBenchResult(method.ToString().ToLowerInvariant(), options.Bits, options.GroupSize, options.Config.NumHiddenLayers,
                seconds, model.Layers.Sum(l => l.Parameters), model.MeanRelativeError);
        }
    }

    /// <summary>
    /// The hidden verb: <c>bench-quant [--shape 7b|tiny] [--layers N] [--method rtn,hqq,gptq] [--bits N] [--group-size G]
    /// [--calibration-samples N] [--calibration-length N] [--device cpu|cuda]</c>; one JSON line per method on stdout.
    /// </summary>
    public static int RunVerb(IReadOnlyList<string> args, TextWriter stdout, TextWriter stderr)
    {
        string Arg(string flag, string fallback)
        {
            for (var i = 0; i < args.Count - 1; i++)
            {
                if (args[i] == flag)
                {
                    return args[i + 1];
                }
            }
            return fallback;
        }
        int Int(string flag, int fallback) => int.Parse(Arg(flag, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        var config = Arg("--shape", "7b") switch
        {
            "7b" => Llama7B,
            "tiny" => Llama7B with { HiddenSize = 256, IntermediateSize = 704, NumAttentionHeads = 4, NumKeyValueHeads = 4, HeadDim = 64, VocabSize = 512 },
            var other => throw new EngineInputException($"--shape: '{other}' is not one of 7b, tiny"),
        };
        config = config with { NumHiddenLayers = Int("--layers", config.NumHiddenLayers) };
        var methods = Arg("--method", "rtn,hqq,gptq").Split(',').Select(m => Enum.Parse<QuantMethod>(m, ignoreCase: true)).ToList();
        var device = Arg("--device", "cpu") == "cuda" ? CUDA : CPU;
        var options = new QuantBenchOptions
        {
            Config = config,
            Methods = methods,
            Bits = Int("--bits", 4),
            GroupSize = Int("--group-size", 64),
            CalibrationSamples = Int("--calibration-samples", 128),
            CalibrationLength = Int("--calibration-length", 2048),
            Device = device,
        };
        foreach (var result in Run(options, stderr.WriteLine))
        {
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["event"] = "bench-quant",
                ["method"] = result.Method,
                ["bits"] = result.Bits,
                ["groupSize"] = result.GroupSize,
                ["layers"] = result.Layers,
                ["hidden"] = config.HiddenSize,
                ["seconds"] = Math.Round(result.Seconds, 3),
                ["parameters"] = result.Parameters,
                ["parametersPerSecond"] = Math.Round(result.ParametersPerSecond),
                ["meanRelativeError"] = Math.Round(result.MeanRelativeError, 6),
                ["device"] = device.type.ToString().ToLowerInvariant(),
            }));
            stdout.Flush();
        }
        return 0;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
        {
            torch.cuda.synchronize();
        }
    }
}
