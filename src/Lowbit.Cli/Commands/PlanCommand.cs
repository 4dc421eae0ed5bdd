using System.CommandLine;
using System.Globalization;
using Lowbit.Cli.Plan;
using Lowbit.Planner;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary>
/// <c>lowbit plan</c>: memory estimate, cheapest placement that fits, why cheaper ones do not, and
/// throughput/cost. Exit codes: <see cref="ExitCodes.Ok"/>, <see cref="ExitCodes.BadInput"/> (unknown
/// model, format or option — the message lists accepted values), <see cref="ExitCodes.NoFit"/>.
/// </summary>
public static class PlanCommand
{
    private static readonly IReadOnlyList<string> OutputFormats = ["table", "json"];

    public static Command Create()
    {
        // Numbers are read as strings and parsed here so that a bad value is a BadInput error naming the
        // flag, like every other bad input of this command (a System.CommandLine parse error exits 1).
        var model = new Option<string>("--model") { Description = $"Preset name or path to a config.json (presets: {string.Join(", ", ModelPresets.Names)})" };
        var mode = new Option<string>("--mode") { Description = $"Workload: {string.Join(", ", PlannerNames.Modes)}", DefaultValueFactory = _ => "inference" };
        var weights = new Option<string>("--weights") { Description = $"Weights format: {string.Join(", ", WeightFormat.Names)} (default: bf16; qlora nf4; lowbit-full int8; quantize int4)" };
        var groupSize = new Option<string>("--group-size") { Description = "Group size of int8/int4/int3/int2 (default 128; int8 without it is per-channel)" };
        var context = new Option<string>("--context") { Description = "Context tokens per sequence (inference)", DefaultValueFactory = _ => "4096" };
        var batch = new Option<string>("--batch") { Description = "Concurrent sequences (inference)", DefaultValueFactory = _ => "1" };
        var seq = new Option<string>("--seq") { Description = "Training/calibration sequence length", DefaultValueFactory = _ => "2048" };
        var microBatch = new Option<string>("--micro-batch") { Description = "Sequences per GPU per step (training)", DefaultValueFactory = _ => "1" };
        var checkpointing = new Option<bool>("--gradient-checkpointing") { Description = "Recompute activations in backward (training)" };
        var quantizeHead = new Option<bool>("--quantize-head") { Description = "The output head quantized like the layers (a QuantizedModel's spec.quantizeHead; quantized --weights only)" };
        var runtime = new Option<string>("--runtime") { Description = $"Runtime whose memory model applies: {string.Join(", ", PlannerNames.Runtimes)}", DefaultValueFactory = _ => "lowbit" };
        var attention = new Option<string>("--attention") { Description = $"Attention implementation: {string.Join(", ", PlannerNames.Attentions)} (eager materializes scores)", DefaultValueFactory = _ => "sdpa" };
        var loraTargets = new Option<string>("--lora-targets") { Description = "LoRA target modules, comma-separated (q_proj,v_proj ... or all-linear)", DefaultValueFactory = _ => "all-linear" };
        var kvCache = new Option<string>("--kv-cache") { Description = $"KV cache element type: {string.Join(", ", PlannerNames.KvCacheFormats)}", DefaultValueFactory = _ => "fp16" };
        var optimizer = new Option<string>("--optimizer") { Description = $"Optimizer: {string.Join(", ", PlannerNames.Optimizers)} (default adamw; lowbit-full adamw-8bit)" };
        var loraRank = new Option<string>("--lora-rank") { Description = "LoRA rank r", DefaultValueFactory = _ => "16" };
        var calibration = new Option<string>("--calibration-samples") { Description = "Calibration sequences for quantize (0 for RTN/HQQ)", DefaultValueFactory = _ => "128" };
        var catalog = new Option<string>("--catalog") { Description = "GPU catalog override (YAML or JSON)" };
        var gpuTypes = new Option<string>("--gpu-types") { Description = "Allowed node types or GPU models, comma-separated" };
        var maxUsd = new Option<string>("--max-usd-per-hour") { Description = "Budget per replica" };
        var minTokens = new Option<string>("--min-tokens-per-second") { Description = "Minimum decode tokens/s per replica" };
        var output = new Option<string>("--output") { Description = "table or json", DefaultValueFactory = _ => "table" };

        var command = new Command("plan", "Estimate memory and pick the cheapest GPU placement that fits.")
        {
            TreatUnmatchedTokensAsErrors = false,
        };
        Option[] all = [model, mode, weights, groupSize, quantizeHead, context, batch, seq, microBatch, checkpointing, runtime, attention, kvCache, optimizer, loraRank, loraTargets, calibration, catalog, gpuTypes, maxUsd, minTokens, output];
        foreach (var option in all)
        {
            command.Options.Add(option);
        }

        command.SetAction(parseResult =>
        {
            try
            {
                if (parseResult.UnmatchedTokens.Count > 0)
                {
                    throw new PlanInputException("plan", $"unknown option or argument '{parseResult.UnmatchedTokens[0]}'", [.. all.Select(o => o.Name)]);
                }
                var format = parseResult.GetValue(output)!.Trim().ToLowerInvariant();
                if (!OutputFormats.Contains(format))
                {
                    throw new PlanInputException("output", $"unknown output '{format}'", OutputFormats);
                }
                var modelValue = parseResult.GetValue(model);
                if (string.IsNullOrWhiteSpace(modelValue))
                {
                    throw new PlanInputException("model", "is required (a preset name or a path to a config.json)", ModelPresets.Names);
                }

                var workloadMode = PlannerNames.ParseMode(parseResult.GetValue(mode)!);
                var group = OptionalInt(parseResult.GetValue(groupSize), "group-size");
                var weightFormat = WeightFormat.Parse(parseResult.GetValue(weights) ?? PlannerNames.DefaultWeights(workloadMode), group);
                if (parseResult.GetValue(quantizeHead))
                {
                    if (weightFormat.LinearBitsPerWeight >= weightFormat.EmbeddingBitsPerWeight)
                    {
                        throw new PlanInputException("quantize-head", $"applies to quantized weights, not {weightFormat.Name}", ["int8", "int4", "int3", "int2"]);
                    }
                    weightFormat = weightFormat.WithQuantizedHead();
                }
                var request = new PlanRequest
                {
                    Model = LoadModel(modelValue),
                    Workload = new Workload
                    {
                        Mode = workloadMode,
                        Weights = weightFormat,
                        ContextLength = Int(parseResult.GetValue(context), "context"),
                        Concurrency = Int(parseResult.GetValue(batch), "batch"),
                        SequenceLength = Int(parseResult.GetValue(seq), "seq"),
                        MicroBatch = Int(parseResult.GetValue(microBatch), "micro-batch"),
                        GradientCheckpointing = parseResult.GetValue(checkpointing),
                        Runtime = PlannerNames.ParseRuntime(parseResult.GetValue(runtime)!),
                        KvCache = PlannerNames.ParseKvCache(parseResult.GetValue(kvCache)!),
                        Optimizer = parseResult.GetValue(optimizer) is { } o ? PlannerNames.ParseOptimizer(o) : OptimizerKind.ModeDefault,
                        LoraRank = Int(parseResult.GetValue(loraRank), "lora-rank"),
                        LoraTargets = PlannerNames.ParseLoraTargets(parseResult.GetValue(loraTargets)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)),
                        Attention = PlannerNames.ParseAttention(parseResult.GetValue(attention)!),
                        CalibrationSamples = Int(parseResult.GetValue(calibration), "calibration-samples"),
                    },
                    Catalog = parseResult.GetValue(catalog) is { } path ? CatalogFile.Load(path) : GpuCatalog.Default,
                    Constraints = new PlacementConstraints
                    {
                        AllowedGpuTypes = parseResult.GetValue(gpuTypes) is { } types
                            ? [.. types.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)]
                            : [],
                        MaxUsdPerHour = OptionalDouble(parseResult.GetValue(maxUsd), "max-usd-per-hour") ?? double.PositiveInfinity,
                        MinTokensPerSecond = OptionalDouble(parseResult.GetValue(minTokens), "min-tokens-per-second") ?? 0,
                    },
                };
                CheckGpuTypes(request);

                var result = PlacementPlanner.Plan(request);
                if (format == "json")
                {
                    Console.Out.WriteLine(PlanJson.Write(result));
                }
                else
                {
                    PlanTable.Write(CreateConsole(), result);
                }
                if (result is NoFit)
                {
                    Console.Error.WriteLine($"lowbit plan: no placement fits. {result.Summary}");
                    return ExitCodes.NoFit;
                }
                return ExitCodes.Ok;
            }
            catch (PlanInputException ex)
            {
                Console.Error.WriteLine($"lowbit plan: {ex.Message}");
                return ExitCodes.BadInput;
            }
        });
        return command;
    }

    private static ModelArchitecture LoadModel(string value)
    {
        var path = Directory.Exists(value) ? Path.Combine(value, "config.json") : value;
        if (File.Exists(path))
        {
            return HfConfigParser.Parse(File.ReadAllText(path), Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath(path))));
        }
        if (value.EndsWith(".json", StringComparison.OrdinalIgnoreCase) || value.Contains('/', StringComparison.Ordinal))
        {
            throw new PlanInputException("model", $"file '{value}' does not exist (give a preset name, or a path to a config.json or to the directory holding it)", ModelPresets.Names);
        }
        return ModelPresets.Get(value);
    }

    private static void CheckGpuTypes(PlanRequest request)
    {
        foreach (var wanted in request.Constraints.AllowedGpuTypes)
        {
            var known = request.Catalog.NodeTypes.Any(n =>
                Same(n.Name, wanted) || Same(n.GpuModel, wanted) || (n.Kind == DeviceKind.Cpu && Same("cpu", wanted)));
            if (!known)
            {
                throw new PlanInputException("gpu-types", $"unknown GPU type '{wanted}'", [.. request.Catalog.NodeTypes.Select(n => n.Name)]);
            }
        }

        static bool Same(string a, string b) =>
            string.Equals(new string([.. a.Where(char.IsLetterOrDigit)]), new string([.. b.Where(char.IsLetterOrDigit)]), StringComparison.OrdinalIgnoreCase);
    }

    private static IAnsiConsole CreateConsole()
    {
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Out = new AnsiConsoleOutput(Console.Out),
            Ansi = Console.IsOutputRedirected ? AnsiSupport.No : AnsiSupport.Detect,
            ColorSystem = Console.IsOutputRedirected ? ColorSystemSupport.NoColors : ColorSystemSupport.Detect,
        });
        if (Console.IsOutputRedirected)
        {
            console.Profile.Width = 160;
        }
        return console;
    }

    private static int Int(string? value, string field) =>
        OptionalInt(value, field) ?? throw new PlanInputException(field, "is required");

    private static int? OptionalInt(string? value, string field)
    {
        if (value is null)
        {
            return null;
        }
        return int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed)
            ? parsed
            : throw new PlanInputException(field, $"'{value}' is not an integer");
    }

    private static double? OptionalDouble(string? value, string field)
    {
        if (value is null)
        {
            return null;
        }
        return double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var parsed) && parsed >= 0
            ? parsed
            : throw new PlanInputException(field, $"'{value}' is not a non-negative number");
    }
}
