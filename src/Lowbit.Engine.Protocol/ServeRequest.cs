namespace Lowbit.Engine.Protocol;

/// <summary>
/// <c>serve --model SRC [--adapters A,B] [--port N] [--max-context N] [--max-concurrency N] [--served-name NAME] [--device cpu|cuda] [--api-key-file F]</c>:
/// an OpenAI-compatible server (docs/serve.md). <c>--adapters</c> entries are PEFT folders, <c>name=path</c> or a path
/// (the folder name is the adapter's model name).
/// </summary>
public sealed record ServeRequest : EngineRequest
{
    public const int DefaultPort = 8080;

    private static readonly string[] Flags =
    [
        CommonFlags.Model, CommonFlags.Revision, "--adapters", "--port", "--max-context", "--max-concurrency", "--served-name",
        CommonFlags.Device, "--api-key-file",
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

    /// <summary>A file holding the API key; when set, <c>/v1/*</c> needs <c>Authorization: Bearer KEY</c> (401 otherwise).</summary>
    public string? ApiKeyFile { get; init; }

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
        .Add("--api-key-file", ApiKeyFile)
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
            ApiKeyFile = r.Optional("--api-key-file"),
        };
    }
}
