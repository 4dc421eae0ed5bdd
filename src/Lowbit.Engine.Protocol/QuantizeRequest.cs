namespace Lowbit.Engine.Protocol;

/// <summary>Output formats of <c>quantize --format</c> (comma-separated).</summary>
public static class ExportFormats
{
    /// <summary>Lowbit's own safetensors layout (packed ints + scales + zeros + metadata); loadable by eval and serve.</summary>
    public const string Lowbit = "lowbit";

    /// <summary>AutoGPTQ-compatible safetensors (4 or 8 bits).</summary>
    public const string Gptq = "gptq";

    public const string GgufQ8 = "gguf-q8_0";
    public const string GgufQ4 = "gguf-q4_0";
    public const string GgufQ4K = "gguf-q4_k";

    public static IReadOnlyList<string> All { get; } = [Lowbit, Gptq, GgufQ8, GgufQ4, GgufQ4K];

    /// <summary>
    /// Where <c>quantize --out DIR</c> writes a format: one folder per format (<c>DIR/lowbit/</c>, <c>DIR/gguf-q4_k/</c>).
    /// The operator hands these paths to <c>finetune</c>, <c>serve</c> and llama.cpp, so both sides use this function.
    /// </summary>
    public static string Folder(string outDirectory, string format) => $"{outDirectory.TrimEnd('/')}/{format}";

    /// <summary>The GGUF file inside a GGUF format's folder: <c>DIR/gguf-q4_k/model-q4_k.gguf</c>.</summary>
    public static string GgufFile(string outDirectory, string format) => $"{Folder(outDirectory, format)}/{GgufFileName(format)}";

    /// <summary><c>model-q4_k.gguf</c> for <c>gguf-q4_k</c>.</summary>
    public static string GgufFileName(string format) =>
        format.StartsWith("gguf-", StringComparison.Ordinal)
            ? $"model-{format["gguf-".Length..]}.gguf"
            : throw new ArgumentException($"{format} is not a GGUF format", nameof(format));
}

/// <summary>
/// <c>quantize --model SRC --method rtn|hqq|gptq (--bits N | --target-bpw X) --group-size G --format lowbit,gguf-q4_k --out DIR
/// [--quantize-head true] [--calibration FILE] [--calibration-samples N] [--calibration-length N] [--eval-text FILE]
/// [--device cpu|cuda] [--result-file F]</c>.
/// With <c>--target-bpw</c> the layers get a mix of widths meeting the budget; <c>--bits</c> is then the widest width used.
/// </summary>
public sealed record QuantizeRequest : EngineRequest
{
    public const int DefaultGroupSize = 64;

    /// <summary>Accepted <c>--bits</c>.</summary>
    public static IReadOnlyList<int> AcceptedBits { get; } = [2, 3, 4, 8];

    /// <summary>Accepted <c>--group-size</c>; -1 means one group per output channel (per-channel).</summary>
    public static IReadOnlyList<int> AcceptedGroupSizes { get; } = [-1, 32, 64, 128, 256];

    private static readonly string[] Flags =
    [
        CommonFlags.Model, CommonFlags.Revision, "--method", "--bits", "--target-bpw", "--group-size", "--scheme", "--format", CommonFlags.Out, "--quantize-head",
        "--calibration", "--calibration-samples", "--calibration-length", "--eval-text", CommonFlags.Device, CommonFlags.ResultFile,
    ];

    public required string Model { get; init; }

    public string? Revision { get; init; }

    public required QuantizationMethod Method { get; init; }

    /// <summary>Bit width (2, 3, 4, 8); with <see cref="TargetBitsPerWeight"/>, the widest width of the mix.</summary>
    public int? Bits { get; init; }

    /// <summary>Mixed precision: average bits per weight to meet (e.g. 2.5, 3.0).</summary>
    public double? TargetBitsPerWeight { get; init; }

    public int GroupSize { get; init; } = DefaultGroupSize;

    /// <summary>Zero-point scheme for rtn and gptq (<c>--scheme asym|sym</c>); absent means asym.</summary>
    public ZeroPointScheme? Scheme { get; init; }

    /// <summary>Output formats, from <see cref="ExportFormats.All"/>; default <c>lowbit</c>.</summary>
    public IReadOnlyList<string> Formats { get; init => field = ValueList.Of(value); } = new ValueList<string>([ExportFormats.Lowbit]);

    /// <summary>Output directory.</summary>
    public required string Out { get; init; }

    /// <summary>
    /// Quantize lm_head too (same method, <c>--bits</c> and group size; embeddings stay dense), as llama.cpp's k-quants
    /// and GPTQModel's <c>lm_head=True</c> do: a 7B's 16-bit head is 262 MB of the 3.9 GB a 4-bit decode step reads. The
    /// lowbit format only (gptq readers expect a dense head; the GGUF formats encode their own). Default false.
    /// </summary>
    public bool QuantizeHead { get; init; }

    /// <summary>Calibration text file or dataset JSONL (required for gptq and for --target-bpw sensitivity).</summary>
    public string? Calibration { get; init; }

    /// <summary>Number of calibration sequences (GPTQ's classic 128).</summary>
    public int? CalibrationSamples { get; init; }

    /// <summary>Tokens per calibration sequence (GPTQ's classic 2048).</summary>
    public int? CalibrationLength { get; init; }

    /// <summary>Text for perplexity before and after quantization.</summary>
    public string? EvalText { get; init; }

    public ComputeDevice? Device { get; init; }

    public string? ResultFile { get; init; }

    public override string Verb => EngineVerbs.Quantize;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add(CommonFlags.Model, Model)
        .Add(CommonFlags.Revision, Revision)
        .Add("--method", (QuantizationMethod?)Method)
        .Add("--bits", Bits)
        .Add("--target-bpw", TargetBitsPerWeight)
        .Add("--group-size", GroupSize)
        .Add("--scheme", Scheme)
        .Add("--format", Formats)
        .Add(CommonFlags.Out, Out)
        .Add("--quantize-head", QuantizeHead)
        .Add("--calibration", Calibration)
        .Add("--calibration-samples", CalibrationSamples)
        .Add("--calibration-length", CalibrationLength)
        .Add("--eval-text", EvalText)
        .Add(CommonFlags.Device, Device)
        .Add(CommonFlags.ResultFile, ResultFile)
        .Build();

    public static new QuantizeRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.Quantize, args, Flags);
        var method = r.Enum<QuantizationMethod>("--method")
            ?? throw new ProtocolArgumentException("--method", "required", ProtocolNames.Accepted<QuantizationMethod>());
        var bits = r.Int("--bits", AcceptedBits);
        var target = r.Double("--target-bpw", 1.5, 8.0);
        if (bits is null && target is null)
        {
            throw new ProtocolArgumentException("--bits", "one of --bits or --target-bpw is required",
                $"--bits {string.Join("|", AcceptedBits)} or --target-bpw 1.5..8");
        }
        var formats = r.List("--format", ExportFormats.All);
        if (formats.Count == 0)
        {
            formats = new ValueList<string>([ExportFormats.Lowbit]);
        }
        if (formats.Contains(ExportFormats.Gptq) && (target is not null || bits is not (4 or 8)))
        {
            throw new ProtocolArgumentException("--format", "gptq export needs --bits 4 or 8 without --target-bpw", "gptq with --bits 4|8");
        }
        var quantizeHead = r.Bool("--quantize-head");
        if (quantizeHead && formats.Contains(ExportFormats.Gptq))
        {
            throw new ProtocolArgumentException("--quantize-head", "the gptq format keeps lm_head dense (its readers expect it so)",
                "--quantize-head with --format lowbit (and gguf-*, which encode their own head), or drop --quantize-head");
        }
        var scheme = r.Enum<ZeroPointScheme>("--scheme");
        if (scheme == ZeroPointScheme.Sym && method == QuantizationMethod.Hqq)
        {
            throw new ProtocolArgumentException("--scheme", "hqq optimizes its zero-points; sym applies to rtn and gptq", "--scheme sym with --method rtn|gptq");
        }
        var calibration = r.Optional("--calibration");
        if (method == QuantizationMethod.Gptq && calibration is null)
        {
            throw new ProtocolArgumentException("--calibration", "required for --method gptq", "a text file or a dataset JSONL");
        }
        return new QuantizeRequest
        {
            Model = r.Required(CommonFlags.Model, CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            Method = method,
            Bits = bits,
            TargetBitsPerWeight = target,
            GroupSize = r.Int("--group-size", AcceptedGroupSizes) ?? DefaultGroupSize,
            Scheme = scheme,
            Formats = formats,
            Out = r.Required(CommonFlags.Out, "an output directory"),
            QuantizeHead = quantizeHead,
            Calibration = calibration,
            CalibrationSamples = r.Int("--calibration-samples", 1, 100_000),
            CalibrationLength = r.Int("--calibration-length", 8, 1 << 20),
            EvalText = r.Optional("--eval-text"),
            Device = r.Enum<ComputeDevice>(CommonFlags.Device),
            ResultFile = r.Optional(CommonFlags.ResultFile),
        };
    }
}
