namespace Lowbit.Engine.Protocol;

/// <summary>
/// <c>serve --model SRC [--adapters A,B] [--port N] [--max-context N] [--max-concurrency N] [--served-name NAME] [--device cpu|cuda]</c>:
/// an OpenAI-compatible server. The verb itself comes in a later issue; the contract is fixed now.
/// </summary>
public sealed record ServeRequest : EngineRequest
{
    public const int DefaultPort = 8080;

    private static readonly string[] Flags =
    [
        CommonFlags.Model, CommonFlags.Revision, "--adapters", "--port", "--max-context", "--max-concurrency", "--served-name",
        CommonFlags.Device,
    ];

    public required string Model { get; init; }

    public string? Revision { get; init; }

    /// <summary>LoRA adapter folders (PEFT layout) to load alongside the model.</summary>
    public IReadOnlyList<string> Adapters { get; init => field = ValueList.Of(value); } = ValueList<string>.Empty;

    public int Port { get; init; } = DefaultPort;

    public int MaxContext { get; init; } = 4096;

    public int MaxConcurrency { get; init; } = 8;

    /// <summary>The model id reported by <c>/v1/models</c>; default the source's name.</summary>
    public string? ServedName { get; init; }

    public ComputeDevice? Device { get; init; }

    public override string Verb => EngineVerbs.Serve;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add(CommonFlags.Model, Model)
        .Add(CommonFlags.Revision, Revision)
        .Add("--adapters", Adapters)
        .Add("--port", Port)
        .Add("--max-context", MaxContext)
        .Add("--max-concurrency", MaxConcurrency)
        .Add("--served-name", ServedName)
        .Add(CommonFlags.Device, Device)
        .Build();

    public static new ServeRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.Serve, args, Flags);
        return new ServeRequest
        {
            Model = r.Required(CommonFlags.Model, CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            Adapters = r.List("--adapters"),
            Port = r.Int("--port", 1, 65535) ?? DefaultPort,
            MaxContext = r.Int("--max-context", 16, 1 << 22) ?? 4096,
            MaxConcurrency = r.Int("--max-concurrency", 1, 4096) ?? 8,
            ServedName = r.Optional("--served-name"),
            Device = r.Enum<ComputeDevice>(CommonFlags.Device),
        };
    }
}
