using System.Diagnostics;
using System.Globalization;
using Lowbit.Engine;
using Lowbit.Engine.DevTools;
using Lowbit.Engine.Protocol;

// lowbit-engine-dev: the developer verbs that do not ship in the engine image (benchmarks, kernel self-checks,
// training the test fixture). The GPU bundle's run.sh sends these verbs here.
if (args.Length == 0)
{
    Console.Error.WriteLine($"usage: lowbit-engine-dev {string.Join("|", DevVerbs.Names)} [options]");
    return EngineExitCodes.BadInput;
}
try
{
    return DevVerbs.Run(args, Console.Out, Console.Error);
}
catch (ProtocolArgumentException ex)
{
    Console.Error.WriteLine($"lowbit-engine-dev {args[0]}: {ex.Message}");
    return EngineExitCodes.BadInput;
}
catch (EngineInputException ex)
{
    // E.g. selfcheck-kernels on a host without CUDA: the named argument, exit 42, no stack trace.
    Console.Error.WriteLine($"lowbit-engine-dev {args[0]}: {ex.Message}");
    return EngineExitCodes.BadInput;
}

namespace Lowbit.Engine.DevTools
{
    /// <summary>Developer verbs: <c>train-fixture</c>, <c>bench-quant</c>, <c>bench-decode</c>, <c>bench-finetune</c>, <c>bench-kernels</c>, <c>selfcheck-kernels</c>.</summary>
    internal static class DevVerbs
    {
        public static IReadOnlyList<string> Names { get; } = ["train-fixture", "bench-quant", "bench-decode", "bench-finetune", "bench-kernels", "selfcheck-kernels"];

        public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
        {
            if (!Names.Contains(args[0]))
            {
                throw new ProtocolArgumentException("verb", $"'{args[0]}' is not a developer verb", string.Join(", ", Names));
            }
            TorchRuntime.Initialize();
            switch (args[0])
            {
                case "train-fixture":
                    var options = ParseTrainFixture(args);
                    var stopwatch = Stopwatch.StartNew();
                    var result = FixtureTrainer.Train(options, stdout);
                    stderr.WriteLine($"train-fixture: perplexity {result.Perplexity:F4} in {stopwatch.Elapsed.TotalSeconds:F0} s");
                    return 0;
                case "bench-quant":
                    return QuantBench.RunVerb(args, stdout, stderr);
                case "bench-decode":
                    return BenchDecodeVerb.Run(args, stdout, stderr);
                case "bench-finetune":
                    return BenchFineTuneVerb.Run(args, stdout, stderr);
                case "bench-kernels":
                    return BenchKernelsVerb.Run(args, stdout, stderr);
                default:
                    return SelfCheckKernelsVerb.Run(stdout, stderr);
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
            int? Int(string flag) => Get(flag) is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : null;
            return options with
            {
                Steps = Int("--steps") ?? options.Steps,
                BatchSize = Int("--batch-size") ?? options.BatchSize,
                SequenceLength = Int("--seq-length") ?? options.SequenceLength,
                Device = TorchRuntime.ResolveDevice(Get("--device") is { } d && ProtocolNames.TryParse<ComputeDevice>(d, out var device) ? device : ComputeDevice.Cpu),
            };
        }
    }
}
