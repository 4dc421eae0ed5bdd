using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Sources;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>
/// <c>quantize</c>: quantizes every decoder projection layer by layer (RTN, HQQ or GPTQ; one width or a mix meeting
/// <c>--target-bpw</c>; lm_head too with <c>--quantize-head true</c>, at <c>--bits</c>), writes each <c>--format</c> into <c>--out/&lt;format&gt;</c>, and reports size, bits per
/// weight, compression, per-layer and mean reconstruction error, and perplexity before/after with <c>--eval-text</c>.
/// GGUF formats encode the source weights with llama.cpp's block codecs (Q8_0/Q4_0/Q4_K); the method applies to
/// the lowbit and gptq formats and to the reported errors and perplexity.
/// </summary>
public static class QuantizeVerb
{
    private const int DefaultCalibrationSamples = 128;
    private const int DefaultCalibrationLength = 2048;
    private const int EvalContext = 512;

    public static EngineResult Run(QuantizeRequest request, VerbContext context)
    {
        Validate(request);
        var device = TorchRuntime.ResolveDevice(request.Device);
        using var http = ModelSource.CreateHttpClient();
        var directory = new ModelSource(http, context.Emit, context.Time).Resolve(request.Model, request.Revision, weights: true);
        using var checkpoint = Checkpoint.Open(directory);
        var config = checkpoint.Config;
        var tokenizer = request.Calibration is not null || request.EvalText is not null ? TokenizerLoader.Load(directory) : null;
        using var calibration = request.Calibration is null ? null : CalibrationTokens(tokenizer!, request);
        var evalTokens = request.EvalText is null ? null : EvalVerb.Tokens(tokenizer!, ReadExisting(request.EvalText, "--eval-text"), null);
        var computeDtype = ModelLoading.ComputeDtype(config, device);
        var evalContext = Math.Min(EvalContext, config.MaxPositionEmbeddings);

        double? before = null;
        if (evalTokens is not null)
        {
            using var dense = ModelIo.Load(checkpoint, computeDtype, device);
            before = PerplexityEvaluator.Evaluate(dense, evalTokens, evalContext, evalContext, device).Perplexity;
        }

        var options = new ModelQuantizeOptions
        {
            Method = request.Method,
            Bits = request.Bits ?? 8,
            GroupSize = request.GroupSize == -1 ? 0 : request.GroupSize,
            TargetBitsPerWeight = request.TargetBitsPerWeight,
            Symmetric = request.Scheme == ZeroPointScheme.Sym,
            // GPTQ v1 qzeros store zero−1: quantize so that every zero-point can be stored (an all-positive group
            // would otherwise get zero 0).
            RepresentableZeros = request.Formats.Contains(ExportFormats.Gptq),
            Calibration = calibration,
            Device = device,
            QuantizeHead = request.QuantizeHead,
        };
        var watch = Stopwatch.StartNew();
        using var quantized = ModelQuantizer.Quantize(checkpoint, options, (done, total) =>
            context.Emit(new ProgressEvent { Stage = "quantize", Layer = done, Layers = total, ElapsedSeconds = Math.Round(context.ElapsedSeconds, 3) }));
        var quantizeSeconds = watch.Elapsed.TotalSeconds;

        var exports = new List<(string Format, string Path, long Bytes)>();
        for (var i = 0; i < request.Formats.Count; i++)
        {
            var format = request.Formats[i];
            var outDir = ExportFormats.Folder(request.Out, format);
            exports.Add((format, outDir, Export(format, outDir, checkpoint, quantized)));
            context.Emit(new ProgressEvent { Stage = "export", Layer = i + 1, Layers = request.Formats.Count, ElapsedSeconds = Math.Round(context.ElapsedSeconds, 3) });
        }

        double? after = null;
        if (evalTokens is not null)
        {
            using var model = ModelIo.Load(checkpoint, computeDtype, device);
            model.ReplaceLinears((name, current) =>
                quantized.Linears.TryGetValue(name, out var q) ? new QuantizedLinear(q.To(device), current.DenseBias(computeDtype), cacheDense: true) : null,
                includeLmHead: true);
            after = PerplexityEvaluator.Evaluate(model, evalTokens, evalContext, evalContext, device).Perplexity;
        }

        var primary = exports[0];
        var sixteenBit = config.ParameterCount * 2.0;
        var metrics = new Dictionary<string, double>
        {
            ["parameters"] = config.ParameterCount,
            ["quantizedParameters"] = quantized.Layers.Sum(l => l.Parameters),
            ["bitsPerWeight"] = Math.Round(quantized.BitsPerWeight, 4),
            ["compressionRatio"] = Math.Round(sixteenBit / primary.Bytes, 3),
            ["meanReconstructionError"] = Math.Round(quantized.MeanRelativeError, 6),
            ["quantizeSeconds"] = Math.Round(quantizeSeconds, 3),
        };
        foreach (var (format, _, bytes) in exports)
        {
            metrics[$"bytes.{format}"] = bytes;
        }
        if (before is { } b && after is { } a)
        {
            metrics["perplexityBefore"] = Math.Round(b, 4);
            metrics["perplexityAfter"] = Math.Round(a, 4);
        }
        var info = new Dictionary<string, string>
        {
            ["method"] = request.Method.ToString().ToLowerInvariant(),
            ["device"] = device.type.ToString().ToLowerInvariant(),
            ["formats"] = string.Join(",", request.Formats),
            ["layout"] = quantized.Allocation?.Layout ?? $"{options.Bits}:{quantized.Layers.Count}",
            ["scheme"] = options.Symmetric ? "sym" : "asym",
        };
        if (evalTokens is not null)
        {
            info["evalProtocol"] = string.Create(CultureInfo.InvariantCulture, $"disjoint windows of {evalContext} tokens, BOS first");
        }
        var summary = string.Create(CultureInfo.InvariantCulture,
            $"quantize {info["method"]} {info["layout"]}: {quantized.BitsPerWeight:F3} bits/weight, mean error {quantized.MeanRelativeError:F4}, {quantizeSeconds:F1} s; {primary.Format} {primary.Bytes} bytes at {primary.Path}");
        var perplexity = before is null ? "" : string.Create(CultureInfo.InvariantCulture, $"; perplexity {before:F4} -> {after:F4}");
        context.Stderr.WriteLine(summary + perplexity);
        return new EngineResult
        {
            Ok = true,
            Verb = EngineVerbs.Quantize,
            DurationSeconds = context.ElapsedSeconds,
            Artifact = new ArtifactReport
            {
                Uri = primary.Path,
                Format = primary.Format,
                Bytes = primary.Bytes,
                BitsPerWeight = Math.Round(quantized.BitsPerWeight, 4),
                CompressionRatio = Math.Round(sixteenBit / primary.Bytes, 3),
            },
            Quality = new QualityReport { PerplexityBefore = before, PerplexityAfter = after, MeanReconstructionError = quantized.MeanRelativeError },
            Metrics = metrics,
            Info = info,
            Layers = quantized.Layers.Select(l => new LayerReport { Name = l.Name, Bits = l.Bits, Error = Math.Round(l.RelativeError, 5) }).ToList(),
        };
    }

    /// <summary>Argument checks beyond the protocol's: format/bits/method combinations and files.</summary>
    public static void Validate(QuantizeRequest request)
    {
        foreach (var format in request.Formats)
        {
            var needs = format switch
            {
                ExportFormats.GgufQ8 => 8,
                ExportFormats.GgufQ4 or ExportFormats.GgufQ4K => 4,
                _ => 0,
            };
            if (needs != 0 && (request.TargetBitsPerWeight is not null || request.Bits != needs))
            {
                throw new ProtocolArgumentException("--format", $"{format} stores {needs}-bit blocks; it needs --bits {needs} without --target-bpw",
                    $"{format} with --bits {needs}");
            }
            if (format == ExportFormats.Gptq && request.Method == QuantizationMethod.Hqq)
            {
                throw new ProtocolArgumentException("--format", "gptq stores integer zero-points; hqq's are fractional", "gptq with --method rtn|gptq");
            }
        }
        if (request.Calibration is not null)
        {
            ReadExisting(request.Calibration, "--calibration");
        }
        if (request.EvalText is not null && !File.Exists(request.EvalText))
        {
            throw new EngineInputException($"--eval-text: {request.EvalText} does not exist");
        }
    }

    private static long Export(string format, string outDir, Checkpoint checkpoint, QuantizedModel quantized)
    {
        switch (format)
        {
            case ExportFormats.Lowbit:
                return LowbitCheckpoint.Write(outDir, checkpoint, quantized).Bytes;
            case ExportFormats.Gptq:
                return GptqCheckpoint.Write(outDir, checkpoint, quantized, descAct: quantized.Linears.Values.Any(q => q.GroupIndex is not null)).Bytes;
            default:
                Directory.CreateDirectory(outDir);
                var type = format switch
                {
                    ExportFormats.GgufQ8 => GgmlType.Q8_0,
                    ExportFormats.GgufQ4 => GgmlType.Q4_0,
                    _ => GgmlType.Q4_K,
                };
                string? Read(string file) => File.Exists(Path.Combine(checkpoint.Directory, file)) ? File.ReadAllText(Path.Combine(checkpoint.Directory, file)) : null;
                var tensors = checkpoint.TensorNames.Order(StringComparer.Ordinal)
                    .Select(n => new KeyValuePair<string, Func<Tensor>>(n, () => checkpoint.Load(n, ScalarType.Float32)));
                var path = Path.Combine(outDir, ExportFormats.GgufFileName(format));
                return GgufLlamaExport.Write(path, Read("config.json")!, Read("tokenizer.json"), Read("tokenizer_config.json"), Ordered(tensors), type).Bytes;
        }
    }

    /// <summary>llama.cpp's converter order: token_embd, blocks in order, output_norm, output.</summary>
    internal static IEnumerable<KeyValuePair<string, Func<Tensor>>> Ordered(IEnumerable<KeyValuePair<string, Func<Tensor>>> tensors)
    {
        static (int, int, string) Key(string name)
        {
            if (name.StartsWith("model.embed_tokens", StringComparison.Ordinal))
            {
                return (0, 0, name);
            }
            if (name.StartsWith("model.layers.", StringComparison.Ordinal))
            {
                var layer = int.Parse(name.Split('.')[2], CultureInfo.InvariantCulture);
                return (1, layer, name);
            }
            return (2, name.StartsWith("model.norm", StringComparison.Ordinal) ? 0 : 1, name);
        }
        return tensors.OrderBy(t => Key(t.Key));
    }

    private static string ReadExisting(string path, string flag) =>
        File.Exists(path) ? File.ReadAllText(path) : throw new EngineInputException($"{flag}: {path} does not exist");

    /// <summary>The <c>text</c> of one calibration JSONL line, or a named input error giving the line number.</summary>
    private static string CalibrationLine(string line, int number)
    {
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement is { ValueKind: JsonValueKind.Object } root && root.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String
                ? t.GetString()!
                : throw new EngineInputException($"--calibration: line {number}: every JSONL line must be an object with a string \"text\" field");
        }
        catch (JsonException ex)
        {
            throw new EngineInputException($"--calibration: line {number}: not valid JSON ({ex.Message})");
        }
    }

    /// <summary>
    /// Calibration sequences <c>[samples, length]</c> from a text file, or a JSONL dataset (each line an object with a
    /// <c>text</c> field): the whole text tokenized, then evenly spaced windows (deterministic).
    /// </summary>
    public static Tensor CalibrationTokens(ITextTokenizer tokenizer, QuantizeRequest request)
    {
        var raw = ReadExisting(request.Calibration!, "--calibration");
        var text = request.Calibration!.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase)
            ? string.Join("\n\n", raw.Split('\n').Select((line, index) => (line, index)).Where(l => !string.IsNullOrWhiteSpace(l.line))
                .Select(l => CalibrationLine(l.line, l.index + 1)))
            : raw;
        var ids = tokenizer.Encode(text);
        var length = Math.Min(request.CalibrationLength ?? DefaultCalibrationLength, ids.Count);
        var samples = length == 0 ? 0 : Math.Min(request.CalibrationSamples ?? DefaultCalibrationSamples, ids.Count / length);
        if (samples < 1 || length < 8)
        {
            throw new EngineInputException($"--calibration: {ids.Count} tokens are too few (need at least 8)");
        }
        var stride = samples == 1 ? 0 : (ids.Count - length) / (samples - 1);
        var data = new long[samples * length];
        for (var s = 0; s < samples; s++)
        {
            for (var t = 0; t < length; t++)
            {
                data[s * length + t] = ids[s * stride + t];
            }
        }
        return torch.tensor(data, [samples, length], ScalarType.Int64);
    }
}
