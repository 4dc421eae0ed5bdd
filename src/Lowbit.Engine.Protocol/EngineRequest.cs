namespace Lowbit.Engine.Protocol;

/// <summary>The verbs of <c>lowbit-engine</c>, as written first on its command line.</summary>
public static class EngineVerbs
{
    public const string Inspect = "inspect";
    public const string Quantize = "quantize";
    public const string FineTune = "finetune";
    public const string Serve = "serve";
    public const string Eval = "eval";

    public static IReadOnlyList<string> All { get; } = [Inspect, Quantize, FineTune, Serve, Eval];
}

/// <summary>
/// One engine invocation. Each verb has a sealed record with <c>ToArgs()</c> (what the operator puts in the pod's
/// <c>args</c>) and <c>Parse(args)</c> (what the engine does with them); <c>Parse(r.ToArgs()) == r</c>.
/// </summary>
public abstract record EngineRequest
{
    /// <summary>The verb, first on the command line.</summary>
    public abstract string Verb { get; }

    /// <summary>The command line: the verb, then <c>--flag value</c> pairs for every set member.</summary>
    public abstract IReadOnlyList<string> ToArgs();

    /// <summary>Parses any verb's command line; throws <see cref="ProtocolArgumentException"/> on bad input.</summary>
    public static EngineRequest Parse(IReadOnlyList<string> args)
    {
        ArgumentNullException.ThrowIfNull(args);
        return (args.Count > 0 ? args[0] : "") switch
        {
            EngineVerbs.Inspect => InspectRequest.Parse(args),
            EngineVerbs.Quantize => QuantizeRequest.Parse(args),
            EngineVerbs.FineTune => FineTuneRequest.Parse(args),
            EngineVerbs.Serve => ServeRequest.Parse(args),
            EngineVerbs.Eval => EvalRequest.Parse(args),
            var other => throw new ProtocolArgumentException("verb", $"unknown verb '{other}'", string.Join(", ", EngineVerbs.All)),
        };
    }
}

/// <summary>Flag names shared by several verbs.</summary>
internal static class CommonFlags
{
    public const string Model = "--model";
    public const string Revision = "--revision";
    public const string Device = "--device";
    public const string ResultFile = "--result-file";
    public const string Out = "--out";

    public const string ModelAccepted = "a local folder, an http(s):// URL prefix, or a Hugging Face repo id (org/name)";
}
