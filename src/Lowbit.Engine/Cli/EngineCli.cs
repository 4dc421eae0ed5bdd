using System.Diagnostics;
using Lowbit.Engine.Protocol;
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
        [EngineVerbs.Finetune] = (r, c) => FinetuneVerb.Run((FinetuneRequest)r, c),
        [EngineVerbs.Serve] = (r, c) => Serving.ServeVerb.Run((ServeRequest)r, c),
    };

    public static int Run(string[] args, TextWriter stdout, TextWriter stderr, TimeProvider time)
    {
        if (args.Length > 0 && HiddenVerbs.TryRun(args, stdout, stderr, out var hiddenExit))
        {
            return hiddenExit;
        }
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

/// <summary>What a verb handler gets besides its request.</summary>
public sealed record VerbContext(TextWriter Stdout, TextWriter Stderr, TimeProvider Time, long StartTimestamp)
{
    public double ElapsedSeconds => Time.GetElapsedTime(StartTimestamp).TotalSeconds;

    /// <summary>Writes one progress event line.</summary>
    public void Emit(EngineEvent engineEvent) => Stdout.WriteLine(engineEvent.ToJsonLine());

    public void Log(string message) => Emit(new LogEvent { Level = "info", Message = message });
}

/// <summary>Developer verbs not in the protocol: <c>train-fixture</c>, <c>bench-quant</c>, <c>bench-decode</c>, <c>selfcheck-kernels</c>.</summary>
internal static class HiddenVerbs
{
    public static bool TryRun(string[] args, TextWriter stdout, TextWriter stderr, out int exit)
    {
        exit = 0;
        switch (args[0])
        {
            case "train-fixture":
                TorchRuntime.Initialize();
                var options = ParseTrainFixture(args);
                var stopwatch = Stopwatch.StartNew();
                var result = FixtureTrainer.Train(options, stdout);
                stderr.WriteLine($"train-fixture: perplexity {result.Perplexity:F4} in {stopwatch.Elapsed.TotalSeconds:F0} s");
                return true;
            case "bench-quant":
                TorchRuntime.Initialize();
                exit = Quantization.QuantBench.RunVerb(args, stdout, stderr);
                return true;
            case "bench-decode":
                TorchRuntime.Initialize();
                exit = BenchDecodeVerb.Run(args, stdout, stderr);
                return true;
            case "bench-finetune":
                TorchRuntime.Initialize();
                exit = BenchFinetuneVerb.Run(args, stdout, stderr);
                return true;
            case "selfcheck-kernels":
                TorchRuntime.Initialize();
                exit = SelfCheckKernelsVerb.Run(stdout, stderr);
                return true;
            default:
                return false;
        }
    }

    private static FixtureTrainingOptions ParseTrainFixture(string[] args)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        var options = new FixtureTrainingOptions
        {
            TrainText = Get("--text") ?? throw new ProtocolArgumentException("--text", "required", "the training text file"),
            EvalText = Get("--eval-text") ?? throw new ProtocolArgumentException("--eval-text", "required", "the held-out text file"),
            Out = Get("--out") ?? throw new ProtocolArgumentException("--out", "required", "an output directory"),
        };
        int? Int(string flag) => Get(flag) is { } s ? int.Parse(s, System.Globalization.CultureInfo.InvariantCulture) : null;
        return options with
        {
            Steps = Int("--steps") ?? options.Steps,
            BatchSize = Int("--batch-size") ?? options.BatchSize,
            SequenceLength = Int("--seq-length") ?? options.SequenceLength,
            Device = TorchRuntime.ResolveDevice(Get("--device") is { } d && ProtocolNames.TryParse<ComputeDevice>(d, out var device) ? device : ComputeDevice.Cpu),
        };
    }
}
