namespace Lowbit.Engine.Protocol;

/// <summary>
/// <c>eval --model SRC --text FILE [--context N] [--stride N] [--max-tokens N] [--device cpu|cuda] [--result-file F] [--adapter DIR]</c>:
/// perplexity over the text with a sliding window of <c>context</c> tokens advanced by <c>stride</c>; in every window
/// after the first only the last <c>stride</c> tokens are scored (the overlap is context, not scored twice).
/// </summary>
public sealed record EvalRequest : EngineRequest
{
    public const int DefaultContext = 512;

    private static readonly string[] Flags =
    [
        CommonFlags.Model, CommonFlags.Revision, "--text", "--context", "--stride", "--max-tokens",
        CommonFlags.Device, CommonFlags.ResultFile, "--adapter",
    ];

    public required string Model { get; init; }

    public string? Revision { get; init; }

    /// <summary>UTF-8 text file to score.</summary>
    public required string Text { get; init; }

    /// <summary>Window length in tokens.</summary>
    public int Context { get; init; } = DefaultContext;

    /// <summary>Window advance in tokens; null means the window length (no overlap).</summary>
    public int? Stride { get; init; }

    /// <summary>Score at most this many tokens of the text (for quick runs); null scores all.</summary>
    public int? MaxTokens { get; init; }

    public ComputeDevice? Device { get; init; }

    /// <summary>A PEFT LoRA adapter folder applied to the model before scoring.</summary>
    public string? Adapter { get; init; }

    public string? ResultFile { get; init; }

    public override string Verb => EngineVerbs.Eval;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add(CommonFlags.Model, Model)
        .Add(CommonFlags.Revision, Revision)
        .Add("--text", Text)
        .Add("--context", Context)
        .Add("--stride", Stride)
        .Add("--max-tokens", MaxTokens)
        .Add(CommonFlags.Device, Device)
        .Add(CommonFlags.ResultFile, ResultFile)
        .Add("--adapter", Adapter)
        .Build();

    public static new EvalRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.Eval, args, Flags);
        var context = r.Int("--context", 2, 1 << 20) ?? DefaultContext;
        return new EvalRequest
        {
            Model = r.Required(CommonFlags.Model, CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            Text = r.Required("--text", "a UTF-8 text file"),
            Context = context,
            Stride = r.Int("--stride", 1, context),
            MaxTokens = r.Int("--max-tokens", 2, int.MaxValue),
            Device = r.Enum<ComputeDevice>(CommonFlags.Device),
            ResultFile = r.Optional(CommonFlags.ResultFile),
            Adapter = r.Optional("--adapter"),
        };
    }
}
