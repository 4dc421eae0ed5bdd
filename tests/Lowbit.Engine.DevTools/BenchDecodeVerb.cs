using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Serving;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// Hidden <c>bench-decode --model DIR [--device cuda] [--dtype bfloat16] [--prompt-tokens 128] [--new-tokens 128]
/// [--repeats 3] [--runs eager:1,graph:1,...] [--int4-group 64] [--int4-head false]</c>: greedy decode tokens/s, one JSON line per run (the
/// best of the repeats after one warm-up). A run is <c>MODE:BATCH</c>:
/// <c>eager</c> (TextGenerator, the model's modules; batch 1), <c>fused</c> (<see cref="FastDecoder"/> with eager torch
/// kernels, no graphs), <c>native</c> (fused + native kernels, no graphs), <c>graph</c> (native kernels, CUDA graphs),
/// <c>graph-cublas</c> (graphs, dense GEMV through cuBLAS), <c>graph-fixed</c> (graphs with the fixed kernel defaults instead
/// of the kernels measured fastest at build, <see cref="KernelSelector"/>), <c>graph-unfused</c> (graphs without the fused
/// decode step, <see cref="FastDecoderOptions.FuseDecodeStep"/>), <c>graph-silu-in-down</c> (graphs with SiLU·mul in the
/// down GEMV's prologue instead of the gate/up GEMV's epilogue, <see cref="FastDecoderOptions.GateUpEpilogue"/>); an
/// <c>int4-</c> prefix runs the mode after RTN 4-bit
/// quantization of every layer projection (group <c>--int4-group</c>; lm_head stays dense unless <c>--int4-head true</c>,
/// a checkpoint with a quantized head, whose GEMV then also runs the final RMSNorm). Batch-1 fast runs report
/// whether their greedy tokens equal the eager run's (bf16) or the int4 <c>native</c> run's (int4).
/// <c>--shards N [--shard-devices cuda:0,cuda:0]</c> splits the fast runs' layers into N pipeline stages (as
/// <c>serve --shards</c>; eager runs need every stage on one device); each line then lists the split and the allocator's
/// memory per GPU. Unless <c>--fp32-reference false</c> (or a split, or a float32 model), the checkpoint is also loaded
/// in float32 once and its prefill logits become the reference every bf16 run's prefill logits (the eager run's too) are
/// measured against: how far each path's rounding takes it from the exact-weights answer, side by side.
/// </summary>
internal static class BenchDecodeVerb
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int Int(string flag, int fallback) => Get(flag) is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : fallback;
        var directory = Get("--model") ?? throw new ProtocolArgumentException("--model", "required", "a model folder");
        var device = TorchRuntime.ResolveDevice(Get("--device") is { } d && ProtocolNames.TryParse<ComputeDevice>(d, out var parsed) ? parsed : null);
        var promptTokens = Int("--prompt-tokens", 128);
        var newTokens = Int("--new-tokens", 128);
        var repeats = Int("--repeats", 3);
        var group = Int("--int4-group", 64);
        var head = Get("--int4-head") is { } headText && bool.Parse(headText);
        var runs = ParseRuns(Get("--runs") ?? "eager:1");
        var load = Stopwatch.StartNew();
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        var dtype = Get("--dtype") is { } name ? ModelIo.ParseDtype(name) : ModelLoading.ComputeDtype(config, device);
        using var model = ModelLoading.Load(directory, dtype, device);
        ShardPlan? plan = null;
        if (Get("--shards") is { } shardText)
        {
            var request = new ServeRequest
            {
                Model = directory,
                Shards = int.Parse(shardText, CultureInfo.InvariantCulture),
                ShardDevices = Get("--shard-devices") is { } names ? names.Split(',') : [],
            };
            var devices = PipelinePlacement.ResolveDevices(request, device, device.type == DeviceType.CUDA ? cuda.device_count() : 0);
            if (devices.Count > 0)
            {
                plan = PipelinePlacement.Plan(directory, config, dtype, runs.Max(r => r.Batch), promptTokens + newTokens, devices);
                PipelinePlacement.Place(model, plan);
            }
        }
        Synchronize(device);
        var loadSeconds = load.Elapsed.TotalSeconds;
        var prompt = Enumerable.Range(0, promptTokens).Select(i => (i * 7919 + 13) % config.VocabSize).ToArray();
        var context = new BenchContext
        {
            Stdout = stdout,
            Stderr = stderr,
            Device = device,
            Prompt = prompt,
            NewTokens = newTokens,
            Repeats = repeats,
            LoadSeconds = loadSeconds,
            Layers = config.NumHiddenLayers,
            Dtype = ModelIo.DtypeName(dtype),
            Plan = plan,
        };
        if (runs.Any(r => r.Mode != "eager"))
        {
            NativeKernels.ReportOnce(stderr);
        }
        if (plan is null && dtype != ScalarType.Float32 && Get("--fp32-reference") != "false" && runs.Any(r => !r.Int4))
        {
            context.Float32Logits = Float32PrefillLogits(directory, context, stderr);
        }
        foreach (var run in runs.Where(r => !r.Int4))
        {
            RunOne(model, run, context, "bf16");
        }
        if (runs.Any(r => r.Int4))
        {
            var watch = Stopwatch.StartNew();
            QuantizeInt4(model, group, head);
            Synchronize(device);
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["engine"] = "lowbit", ["step"] = "quantize-rtn-int4", ["groupSize"] = group, ["head"] = head ? "int4" : "dense", ["seconds"] = Math.Round(watch.Elapsed.TotalSeconds, 2),
            }));
            context.Reference = null;
            foreach (var run in runs.Where(r => r.Int4))
            {
                RunOne(model, run, context, head ? $"int4-g{group}-head" : $"int4-g{group}");
            }
        }
        return EngineExitCodes.Ok;
    }

    private sealed record RunSpec(string Mode, int Batch, bool Int4);

    private sealed class BenchContext
    {
        public required TextWriter Stdout { get; init; }

        public required TextWriter Stderr { get; init; }

        public required Device Device { get; init; }

        public required int[] Prompt { get; init; }

        public required int NewTokens { get; init; }

        public required int Repeats { get; init; }

        public required double LoadSeconds { get; init; }

        public required int Layers { get; init; }

        public required string Dtype { get; init; }

        /// <summary>Last-position prefill logits of the checkpoint's float32 forward (see the class summary), or null.</summary>
        public float[]? Float32Logits { get; set; }

        /// <summary>The pipeline split of the fast runs (<c>--shards</c>), or null.</summary>
        public ShardPlan? Plan { get; init; }

        /// <summary>Greedy tokens of the reference run (eager for bf16, fused for int4), batch 1.</summary>
        public int[]? Reference { get; set; }

        public float[]? ReferenceLogits { get; set; }

        /// <summary>Batch-1 greedy tokens of each mode's run, per weights (to compare graphs with the same kernels eagerly).</summary>
        public Dictionary<string, int[]> TokensByRun { get; } = [];
    }

    private static readonly string[] Modes = ["eager", "fused", "native", "graph", "graph-cublas", "graph-fixed", "graph-unfused", "graph-silu-in-down"];

    private static List<RunSpec> ParseRuns(string text)
    {
        var runs = new List<RunSpec>();
        foreach (var item in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = item.Split(':');
            var mode = parts[0];
            var int4 = mode.StartsWith("int4-", StringComparison.Ordinal);
            if (int4)
            {
                mode = mode["int4-".Length..];
            }
            var batch = parts.Length > 1 && int.TryParse(parts[1], CultureInfo.InvariantCulture, out var b) ? b : 1;
            if (!Modes.Contains(mode) || batch < 1 || (mode == "eager" && (batch != 1 || int4)))
            {
                throw new ProtocolArgumentException("--runs", item, "MODE:BATCH with MODE one of eager (batch 1, bf16 only), fused, native, graph, graph-cublas, graph-fixed, graph-unfused, graph-silu-in-down, optionally prefixed int4-");
            }
            runs.Add(new RunSpec(mode, batch, int4));
        }
        return runs;
    }

    private static void RunOne(LlamaForCausalLM model, RunSpec run, BenchContext context, string weights)
    {
        var rates = new List<double>();
        int[]? tokens = null;
        double captureSeconds = 0, prepareSeconds = 0, kernelSeconds = 0;
        string[] kernelChoices = [];
        int graphs = 0;
        bool nativeKernels = false, usesGraphs = false, nativeAttention = false, rowsIdentical = true;
        float[]? prefillLogits = null;
        string[]? shardLines = null, memory = null;
        IReadOnlyList<FastDecoder.StepTraceSegment>? stepTrace = null;
        if (run.Mode == "eager")
        {
            var options = new GenerationOptions { MaxNewTokens = context.NewTokens };
            for (var r = 0; r <= context.Repeats; r++)
            {
                Synchronize(context.Device);
                var watch = Stopwatch.StartNew();
                var output = TextGenerator.Generate(model, context.Prompt, options, context.Device).ToArray();
                Synchronize(context.Device);
                tokens ??= output;
                if (r > 0)
                {
                    rates.Add(output.Length / watch.Elapsed.TotalSeconds);
                }
            }
            context.Reference = tokens;
            context.ReferenceLogits = EagerPrefillLogits(model, context);
            prefillLogits = context.ReferenceLogits;
        }
        else
        {
            var prepare = Stopwatch.StartNew();
            var options = new FastDecoderOptions
            {
                MaxBatch = run.Batch,
                MaxLength = context.Prompt.Length + context.NewTokens,
                UseGraphs = run.Mode is "graph" or "graph-cublas" or "graph-fixed" or "graph-unfused" or "graph-silu-in-down",
                UseNativeKernels = run.Mode != "fused",
                UseNativeGemv = run.Mode is "graph" or "native" or "graph-fixed" or "graph-unfused" or "graph-silu-in-down",
                FuseDecodeStep = run.Mode != "graph-unfused",
                GateUpEpilogue = run.Mode != "graph-silu-in-down",
                MeasureKernels = run.Mode != "graph-fixed",
                KernelLog = context.Stderr,
                Shards = context.Plan?.DecoderShards,
            };
            using var decoder = FastDecoder.Create(model, options, context.Device);
            Synchronize(context.Device);
            prepareSeconds = prepare.Elapsed.TotalSeconds;
            kernelSeconds = decoder.KernelSelectionSeconds;
            kernelChoices = decoder.KernelChoices.Select(c => $"{c.Shape} rows {c.Rows}: {KernelSelector.Name(c.Chosen)}").ToArray();
            nativeKernels = decoder.UsesNativeKernels;
            usesGraphs = decoder.UsesGraphs;
            nativeAttention = decoder.UsesGraphs && decoder.NativeAttentionFor(run.Batch);
            var prompts = Enumerable.Range(0, run.Batch).Select(_ => (IReadOnlyList<int>)context.Prompt).ToList();
            for (var r = 0; r <= context.Repeats; r++)
            {
                if (r == 1)
                {
                    // The step trace (LOWBIT_STEP_TRACE=1) sums the timed runs only, not the warm-up and its captures.
                    decoder.ResetStepTrace();
                }
                Synchronize(context.Device);
                var watch = Stopwatch.StartNew();
                var output = FastGeneration.Generate(decoder, prompts, context.NewTokens);
                Synchronize(context.Device);
                if (r == 0)
                {
                    tokens = output[0];
                    captureSeconds = decoder.CaptureSeconds;
                    graphs = decoder.CapturedGraphs;
                    for (var b = 1; b < output.Length; b++)
                    {
                        if (!output[b].SequenceEqual(output[0]))
                        {
                            rowsIdentical = false;
                            var at = output[b].Zip(output[0]).TakeWhile(p => p.First == p.Second).Count();
                            context.Stderr.WriteLine($"bench-decode: {weights} {run.Mode}:{run.Batch}: row {b} of one prompt differs from row 0 at token {at}");
                            break;
                        }
                    }
                }
                else
                {
                    rates.Add(output.Length * context.NewTokens / watch.Elapsed.TotalSeconds);
                }
            }
            stepTrace = decoder.StepTrace();
            if (stepTrace.Count > 0)
            {
                context.Stderr.WriteLine($"bench-decode: {weights} {run.Mode}:{run.Batch} step trace (µs per step, marks per step; each mark adds a launch): "
                    + string.Join(", ", stepTrace.Select(t => $"{t.Label} {t.MicrosecondsPerStep:F1} ({t.MarksPerStep})"))
                    + $"; total {stepTrace.Sum(t => t.MicrosecondsPerStep):F1}");
            }
            if (context.Plan is { } split)
            {
                shardLines = Enumerable.Range(0, split.Stages.Count).Select(split.Describe).ToArray();
                memory = split.Devices.Where(d => d.type == DeviceType.CUDA).Select(d => Math.Max(0, (int)d.index)).Distinct()
                    .Select(i => CudaMemory.Stats(i) is { } m ? $"cuda:{i}: {m}" : $"cuda:{i}: no allocator stats (liblowbit_memory.so not loaded)").ToArray();
            }
            if (run.Batch == 1)
            {
                decoder.Prefill(0, context.Prompt);
                using var row = decoder.Logits[0].to(ScalarType.Float32).cpu();
                prefillLogits = row.data<float>().ToArray();
            }
            if (weights != "bf16" && run.Mode == "native" && run.Batch == 1)
            {
                context.Reference = tokens;
                context.ReferenceLogits = prefillLogits;
            }
        }
        if (run.Batch == 1 && tokens is not null)
        {
            context.TokensByRun[$"{weights}/{run.Mode}"] = tokens;
        }
        var line = new Dictionary<string, object>
        {
            ["engine"] = "lowbit",
            ["mode"] = run.Mode,
            ["batch"] = run.Batch,
            ["weights"] = weights,
            ["device"] = context.Device.type.ToString().ToLowerInvariant(),
            ["dtype"] = context.Dtype,
            ["layers"] = context.Layers,
            ["promptTokens"] = context.Prompt.Length,
            ["newTokens"] = context.NewTokens,
            ["loadSeconds"] = Math.Round(context.LoadSeconds, 2),
            ["tokensPerSecond"] = Math.Round(rates.Count > 0 ? rates.Max() : 0, 2),
            ["runs"] = rates.Select(v => Math.Round(v, 2)).ToArray(),
        };
        if (shardLines is not null)
        {
            line["shards"] = shardLines.Length;
            line["shardPlan"] = shardLines;
            line["gpuMemory"] = memory ?? [];
        }
        if (run.Mode != "eager")
        {
            line["prepareSeconds"] = Math.Round(prepareSeconds, 3);
            line["captureSeconds"] = Math.Round(captureSeconds, 3);
            line["kernelSelectionSeconds"] = Math.Round(kernelSeconds, 3);
            line["kernels"] = kernelChoices;
            line["graphs"] = graphs;
            line["nativeKernels"] = nativeKernels;
            line["cudaGraphs"] = usesGraphs;
            line["attention"] = nativeAttention ? "native" : "sdpa";
            line["rowsIdentical"] = rowsIdentical;
            if (stepTrace is { Count: > 0 })
            {
                line["stepTrace"] = stepTrace.ToDictionary(t => t.Label, t => Math.Round(t.MicrosecondsPerStep, 2));
            }
            var sameKernels = run.Mode is "graph" ? "native" : run.Mode is "graph-cublas" ? "native-cublas" : null;
            if (sameKernels is not null && context.TokensByRun.TryGetValue($"{weights}/{sameKernels}", out var eagerTokens) && tokens is not null)
            {
                line["tokensMatchingSameKernelsWithoutGraph"] = eagerTokens.Zip(tokens).TakeWhile(p => p.First == p.Second).Count();
            }
            if (context.Reference is { } reference && tokens is not null && !ReferenceEquals(reference, tokens))
            {
                var same = reference.Zip(tokens).TakeWhile(p => p.First == p.Second).Count();
                line["tokensMatchingReference"] = same;
                line["referenceTokens"] = reference.Length;
            }
            if (context.ReferenceLogits is { } refLogits && prefillLogits is not null && !ReferenceEquals(refLogits, prefillLogits))
            {
                var diff = refLogits.Zip(prefillLogits).Max(p => Math.Abs(p.First - p.Second));
                line["prefillLogitMaxAbsDiff"] = Math.Round(diff, 5);
                line["prefillLogitMaxAbs"] = Math.Round(refLogits.Max(Math.Abs), 4);
            }
        }
        if (weights == "bf16" && context.Float32Logits is { } exact && prefillLogits is not null)
        {
            // The same prompt through the float32 model: this run's rounding error, comparable across runs (eager included).
            var errors = exact.Zip(prefillLogits).Select(p => (double)p.First - p.Second).ToArray();
            line["prefillLogitMaxAbsDiffFp32"] = Math.Round(errors.Max(Math.Abs), 5);
            line["prefillLogitRmsDiffFp32"] = Math.Round(Math.Sqrt(errors.Average(e => e * e)), 5);
            line["prefillArgmaxEqualsFp32"] = ArgMax(exact) == ArgMax(prefillLogits);
        }
        context.Stdout.WriteLine(JsonSerializer.Serialize(line));
        context.Stderr.WriteLine($"bench-decode: {weights} {run.Mode}:{run.Batch} {(rates.Count > 0 ? rates.Max() : 0):F1} tokens/s");
    }

    /// <summary>
    /// The prompt's last-position logits from the checkpoint loaded again in float32 on the same device (bf16 weights
    /// widen exactly), or null with a line on stderr when it does not fit or fails. The float32 model is freed before
    /// the runs.
    /// </summary>
    private static float[]? Float32PrefillLogits(string directory, BenchContext context, TextWriter stderr)
    {
        var watch = Stopwatch.StartNew();
        try
        {
            using var exact = ModelLoading.Load(directory, ScalarType.Float32, context.Device);
            var logits = EagerPrefillLogits(exact, context);
            stderr.WriteLine($"bench-decode: float32 reference logits in {watch.Elapsed.TotalSeconds:F1} s (max |logit| {logits.Max(Math.Abs):F3})");
            return logits;
        }
        catch (Exception e) when (e is ExternalException or OutOfMemoryException)
        {
            stderr.WriteLine($"bench-decode: no float32 reference ({e.Message.Split('\n')[0]}); pass --fp32-reference false to skip it");
            return null;
        }
        finally
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            Synchronize(context.Device);
            if (context.Device.type == DeviceType.CUDA)
            {
                CudaMemory.EmptyCache();
            }
        }
    }

    private static int ArgMax(float[] values)
    {
        var best = 0;
        for (var i = 1; i < values.Length; i++)
        {
            if (values[i] > values[best])
            {
                best = i;
            }
        }
        return best;
    }

    /// <summary>Last-position logits (float32) of the model's own forward over the prompt.</summary>
    private static float[] EagerPrefillLogits(LlamaForCausalLM model, BenchContext context)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = tensor(context.Prompt.Select(t => (long)t).ToArray(), [1, context.Prompt.Length], device: context.Device);
        var hidden = model.Model.forward(ids, null);
        var logits = model.Logits(hidden.narrow(1, context.Prompt.Length - 1, 1)).reshape(-1).to(ScalarType.Float32).cpu();
        return logits.data<float>().ToArray();
    }

    /// <summary>
    /// RTN 4-bit (asymmetric, group <paramref name="group"/>) of every layer projection and, with <paramref name="head"/>,
    /// of lm_head, in place; the dense weights are freed.
    /// </summary>
    private static void QuantizeInt4(LlamaForCausalLM model, int group, bool head)
    {
        var options = new RtnOptions { Bits = 4, GroupSize = group };
        model.ReplaceLinears((_, layer) =>
        {
            if (layer is not DenseLinear dense)
            {
                return null;
            }
            var q = Rtn.Quantize(dense.Weight, options);
            var bias = dense.Bias?.detach().clone();
            dense.Dispose();
            return new QuantizedLinear(q, bias);
        }, includeLmHead: head);
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize();
        }
    }
}
