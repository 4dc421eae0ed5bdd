namespace Lowbit.Engine.Protocol;

/// <summary><c>inspect --model SRC [--revision R] [--result-file F]</c>: architecture, parameter count, dtype, tensors, size.</summary>
public sealed record InspectRequest : EngineRequest
{
    private static readonly string[] Flags = [CommonFlags.Model, CommonFlags.Revision, CommonFlags.ResultFile];

    /// <summary>Model source: a local folder, an HTTP(S) URL prefix or a Hugging Face repo id.</summary>
    public required string Model { get; init; }

    /// <summary>Hub revision (branch, tag or commit) for repo-id sources; default <c>main</c>.</summary>
    public string? Revision { get; init; }

    /// <summary>Where the JSON result goes; default <see cref="EngineEnv.TerminationLog"/> when writable.</summary>
    public string? ResultFile { get; init; }

    public override string Verb => EngineVerbs.Inspect;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add(CommonFlags.Model, Model)
        .Add(CommonFlags.Revision, Revision)
        .Add(CommonFlags.ResultFile, ResultFile)
        .Build();

    public static new InspectRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.Inspect, args, Flags);
        return new InspectRequest
        {
            Model = r.Required(CommonFlags.Model, CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            ResultFile = r.Optional(CommonFlags.ResultFile),
        };
    }
}
