using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Evaluation;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Training;

namespace Lowbit.Engine.Cli;

/// <summary>
/// Dispatches a command line to its verb, maps failures to the protocol's exit codes and writes the final
/// result (to <c>--result-file</c>, <c>$LOWBIT_RESULT_FILE</c> or <c>/dev/termination-log</c> when writable).
/// Progress goes to stdout as JSON lines; a human summary goes to stderr.
/// </summary>
public static class EngineCli
{
    /// <summary>
    /// Verbs wired by other parts of the engine (the quantizers register <c>quantize</c> here). A handler gets the
    /// parsed request and the progress writer and returns the result.
    /// </summary>
    public static Dictionary<string, Func<EngineRequest, VerbContext, EngineResult>> Handlers { get; } = new(StringComparer.Ordinal)
    {
        [EngineVerbs.Inspect] = (r, c) => InspectVerb.Run((InspectRequest)r, c),
        [EngineVerbs.Eval] = (r, c) => EvalVerb.Run((EvalRequest)r, c),
        [EngineVerbs.Quantize] = (r, c) => QuantizeVerb.Run((QuantizeRequest)r, c),
        [EngineVerbs.Finetune] = (r, c) => FineTuneVerb.Run((FinetuneRequest)r, c),
        [EngineVerbs.Serve] = (r, c) => ServeVerb.Run((ServeRequest)r, c),
    };

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, TimeProvider time)
    {
        var start = time.GetTimestamp();
        var verb = args.Length > 0 ? args[0] : "";
        string? resultFile = null;
        EngineResult result;
        int exit;
        try
        {
            TorchRuntime.Initialize();
            var request = EngineRequest.Parse(args);
            resultFile = ResultFileOf(request);
            if (!Handlers.TryGetValue(request.Verb, out var handler))
            {
                throw new ProtocolArgumentException("verb", $"'{request.Verb}' is not implemented by this engine build", string.Join(", ", Handlers.Keys.Order()));
            }
            var context = new VerbContext(stdout, stderr, time, start);
            result = handler(request, context) with { DurationSeconds = time.GetElapsedTime(start).TotalSeconds };
            exit = EngineExitCodes.Ok;
        }
        catch (Exception ex) when (Classify(ex) is var (code, reason))
        {
            exit = code;
            result = EngineResult.Failed(verb, reason, ex.Message, time.GetElapsedTime(start).TotalSeconds);
            stderr.WriteLine($"lowbit-engine {verb}: {reason}: {ex.Message}");
            if (code == EngineExitCodes.Failure)
            {
                stderr.WriteLine(ex);
            }
        }
        // A command line that failed to parse still names its result file; honour it so the failure is reported.
        resultFile ??= Array.IndexOf(args, "--result-file") is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        WriteResult(result, resultFile, stderr);
        return exit;
    }

    private static (int Code, string Reason)? Classify(Exception ex) => ex switch
    {
        ProtocolArgumentException or EngineInputException or FileNotFoundException or DirectoryNotFoundException
            => (EngineExitCodes.BadInput, ErrorReasons.BadInput),
        OutOfMemoryException => (EngineExitCodes.OutOfMemory, ErrorReasons.OutOfMemory),
        TrainingInterruptedException => (EngineExitCodes.Interrupted, ErrorReasons.Interrupted),
        _ when IsOutOfMemory(ex) => (EngineExitCodes.OutOfMemory, ErrorReasons.OutOfMemory),
        _ => (EngineExitCodes.Failure, ErrorReasons.RuntimeError),
    };

    private static bool IsOutOfMemory(Exception ex) =>
        ex.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase)
        || ex.Message.Contains("DefaultCPUAllocator: can't allocate", StringComparison.Ordinal);

    private static string? ResultFileOf(EngineRequest request) => request switch
    {
        InspectRequest r => r.ResultFile,
        EvalRequest r => r.ResultFile,
        QuantizeRequest r => r.ResultFile,
        FinetuneRequest r => r.ResultFile,
        _ => null,
    };

    private static void WriteResult(EngineResult result, string? resultFile, TextWriter stderr)
    {
        var json = result.ToJson();
        var path = resultFile ?? Environment.GetEnvironmentVariable(EngineEnv.ResultFile);
        if (path is null && IsWritable(EngineEnv.TerminationLog))
        {
            path = EngineEnv.TerminationLog;
        }
        if (path is null)
        {
            return;
        }
        try
        {
            File.WriteAllText(path, json);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"lowbit-engine: could not write the result to {path}: {ex.Message}");
        }
    }

    private static bool IsWritable(string path)
    {
        try
        {
            if (!File.Exists(path))
            {
                return false;
            }
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Write);
            return true;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
