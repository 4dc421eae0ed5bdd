using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Training;

namespace Lowbit.Engine.DevTools;

/// <summary>
/// <c>bench-finetune --model DIR --method lora|qlora [--steps 12] [--warmup 2] [--seq-length 2048] [--micro-batch 1]
/// [--r 16] [--gradient-checkpointing true] [--device cuda] [--phase-sync false] [--cuda-graph false] [--dropout 0.05]
/// [--shards N] [--shard-devices cuda:0,cuda:0]</c>:
/// the finetune loop on random token
/// blocks (no tokenizer needed: the GPU bundle's random 7B has none), LoRA on all seven projections, AdamW. Prints one
/// JSON line: tokens/s over the steps after the warm-up (wall clock between the warm-up's last step and the last step,
/// each step ending with its loss on the host), peak device memory (used bytes, cuMemGetInfo) and <c>hostMsPerStep</c>, the
/// mean host milliseconds per phase of the timed steps (<see cref="StepPhaseTimings"/>; with <c>--phase-sync true</c>
/// each phase ends with a CUDA synchronize, so the phases include their device time).
/// <para>
/// <c>--random-layers N [--random-hidden 64] [--random-intermediate 172] [--random-heads 4] [--random-vocab 1000]</c>
/// first writes a random Llama of that shape to <c>--model</c> when it holds no <c>config.json</c> (the host-overhead
/// proxy: the 7B's 32 layers and 224 adapted projections at widths where compute is negligible).
/// </para>
/// <para>
/// <c>--optimizer-only true [--layers 32] [--hidden 4096] [--intermediate 11008] [--r 16] [--steps 5] [--device cuda] [--cpu-chunk N]</c>
/// times the optimizer alone (clip to norm 1, AdamW step with weight decay, zero-grad) over the LoRA A/B shapes of all
/// seven projections of a Llama of that size (no model): the per-tensor reference (<see cref="PerTensorAdamW"/>, the
/// engine's update before the flat buffers) and the engine's flat-buffer <see cref="AdamW"/>, one JSON line each, with
/// the median milliseconds per phase (each phase ends with a CUDA synchronize on a GPU).
/// </para>
/// </summary>
public static class BenchFineTuneVerb
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int Int(string flag, int fallback) => Get(flag) is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : fallback;
        if (Get("--optimizer-only") == "true")
        {
            return OptimizerOnly(Get, Int, stdout);
        }
        var model = Get("--model") ?? throw new ProtocolArgumentException("--model", "required", "a model folder");
        var method = ProtocolNames.TryParse<FineTuneMethod>(Get("--method") ?? "lora", out var m) ? m : FineTuneMethod.Lora;
        var steps = Int("--steps", 12);
        var warmup = Int("--warmup", 2);
        var seq = Int("--seq-length", 2048);
        var micro = Int("--micro-batch", 1);
        var r = Int("--r", 16);
        var device = ProtocolNames.TryParse<ComputeDevice>(Get("--device") ?? "cuda", out var d) ? d : ComputeDevice.Cuda;
        var checkpointing = (Get("--gradient-checkpointing") ?? "true") == "true";
        var phaseSync = (Get("--phase-sync") ?? "false") == "true";
        var cudaGraph = (Get("--cuda-graph") ?? "false") == "true";
        var dropout = Get("--dropout") is { } p ? double.Parse(p, CultureInfo.InvariantCulture) : 0.05;
        var shards = Int("--shards", 1);
        var shardDevices = Get("--shard-devices") is { } names ? names.Split(',') : [];
        if (Get("--random-layers") is { } layers && !File.Exists(Path.Combine(model, "config.json")))
        {
            WriteRandomModel(model, int.Parse(layers, CultureInfo.InvariantCulture), Int("--random-hidden", 64),
                Int("--random-intermediate", 172), Int("--random-heads", 4), Int("--random-vocab", 1000));
        }
        var config = LlamaConfig.Load(Path.Combine(model, "config.json"));
        var random = new Random(1234);
        var blocks = Enumerable.Range(0, steps * micro).Select(_ =>
        {
            var ids = new long[seq + 1];
            for (var t = 0; t < ids.Length; t++)
            {
                ids[t] = random.Next(3, config.VocabSize);
            }
            return new PackedBlock(ids, Enumerable.Repeat(true, seq + 1).ToArray());
        }).ToList();
        var output = Path.Combine(Path.GetTempPath(), "lowbit-bench-finetune-" + Guid.NewGuid().ToString("N"));
        var request = new FineTuneRequest
        {
            BaseModel = model, Method = method, Dataset = "(random tokens)", Out = output, R = r, Alpha = 2 * r, Dropout = dropout,
            TargetModules = LoraSettings.AllTargets, SeqLength = seq, MicroBatch = micro, MaxSteps = steps, LearningRate = 2e-4,
            EvalSplit = 0, GradientCheckpointing = checkpointing, Device = device, CudaGraph = cudaGraph, Shards = shards, ShardDevices = shardDevices,
        };
        IReadOnlyList<long>? peakPerDevice = null;
        var shardLines = new List<string>();
        string? graphNote = null;
        var marks = new List<(int Step, double Seconds, long Peak, double Loss)>();
        var phases = new StepPhaseTimings { SynchronizeDevice = phaseSync };
        var watch = Stopwatch.StartNew();
        var outcome = new FineTuner(request, model, e =>
        {
            if (e is TrainEvent t)
            {
                marks.Add((t.Step, watch.Elapsed.TotalSeconds, t.PeakMemoryBytes ?? 0, t.Loss));
                peakPerDevice = t.PeakMemoryBytesPerDevice ?? peakPerDevice;
                stderr.WriteLine(t.ToJsonLine());
            }
            else
            {
                if (e is LogEvent { Message: var message } && (message.StartsWith("CUDA graph", StringComparison.Ordinal) || message.StartsWith("--cuda-graph", StringComparison.Ordinal)))
                {
                    graphNote = message;
                }
                if (e is LogEvent { Message: var plan } && (plan.StartsWith("shard ", StringComparison.Ordinal) || plan.StartsWith("peak cuda", StringComparison.Ordinal)))
                {
                    shardLines.Add(plan);
                }
                stderr.WriteLine(e.ToJsonLine());
            }
        }, blocks: blocks, phases: phases).Run();
        var from = marks.First(x => x.Step == warmup);
        var to = marks[^1];
        var timedTokens = (long)(to.Step - from.Step) * micro * seq;
        var line = new Dictionary<string, object>
        {
            ["engine"] = "lowbit",
            ["bench"] = "finetune",
            ["method"] = ProtocolNames.Of(method),
            ["device"] = ProtocolNames.Of(device),
            ["layers"] = config.NumHiddenLayers,
            ["seqLength"] = seq,
            ["microBatch"] = micro,
            ["r"] = r,
            ["targets"] = LoraSettings.AllTargets.Count,
            ["gradientCheckpointing"] = checkpointing,
            ["dropout"] = dropout,
            ["cudaGraph"] = cudaGraph,
            ["loraGroups"] = Environment.GetEnvironmentVariable(LoraProjectionGroup.SwitchEnv) != "0",
            ["cudaGraphNote"] = graphNote ?? (cudaGraph ? "no capture reported" : "off"),
            ["timedSteps"] = to.Step - from.Step,
            ["tokensPerSecond"] = Math.Round(timedTokens / (to.Seconds - from.Seconds), 1),
            ["peakDeviceUsedBytes"] = outcome.PeakMemoryBytes,
            ["peakDeviceUsedGiB"] = Math.Round(outcome.PeakMemoryBytes / (double)(1L << 30), 2),
            ["trainableParameters"] = outcome.TrainableParameters,
            ["allocatorConfig"] = Environment.GetEnvironmentVariable(DeviceMemory.AllocatorConfigVariable) ?? "(default)",
            ["firstLoss"] = Math.Round(marks[0].Loss, 4),
            ["lastLoss"] = Math.Round(to.Loss, 4),
            ["phaseSync"] = phaseSync,
            ["hostMsPerStep"] = HostMilliseconds(phases, from.Step),
            ["shards"] = shards,
            ["shardDevices"] = string.Join(',', request.ResolveShardDevices(device == ComputeDevice.Cuda)),
            ["peakDeviceUsedGiBPerDevice"] = (peakPerDevice ?? []).Select(b => Math.Round(b / (double)(1L << 30), 2)).ToArray(),
            ["shardLines"] = shardLines,
        };
        stdout.WriteLine(JsonSerializer.Serialize(line));
        try
        {
            Directory.Delete(output, recursive: true);
        }
        catch (IOException)
        {
        }
        return 0;
    }

    private static int OptimizerOnly(Func<string, string?> get, Func<string, int, int> integer, TextWriter stdout)
    {
        var device = TorchRuntime.ResolveDevice(ProtocolNames.TryParse<ComputeDevice>(get("--device") ?? "cuda", out var d) ? d : ComputeDevice.Cuda);
        var (layers, hidden, intermediate, r, steps) = (integer("--layers", 32), integer("--hidden", 4096), integer("--intermediate", 11008), integer("--r", 16), integer("--steps", 5));
        // (in, out) of q, k, v, o, gate, up, down: A is [r, in], B is [out, r].
        var projections = new[] { (hidden, hidden), (hidden, hidden), (hidden, hidden), (hidden, hidden), (hidden, intermediate), (hidden, intermediate), (intermediate, hidden) };
        var shapes = Enumerable.Range(0, layers).SelectMany(_ => projections.SelectMany(p => new[] { new long[] { r, p.Item1 }, [p.Item2, r] })).ToList();
        void Sync()
        {
            if (device.type == TorchSharp.DeviceType.CUDA)
            {
                TorchSharp.torch.cuda.synchronize();
            }
        }
        foreach (var implementation in new[] { "per-tensor", "flat" })
        {
            var parameters = shapes.Select((shape, i) =>
            {
                using var initial = TorchSharp.torch.randn(shape, TorchSharp.torch.ScalarType.Float32, device);
                return (Name: $"p{i}", Parameter: (TorchSharp.torch.Tensor)new TorchSharp.Modules.Parameter(initial));
            }).ToList();
            IDisposable optimizer;
            Func<double, TorchSharp.torch.Tensor> clip;
            Action<double> step;
            Action zero;
            if (implementation == "flat")
            {
                var flat = get("--cpu-chunk") is { } chunk
                    ? new AdamW(parameters, weightDecay: 0.01) { CpuChunkElements = long.Parse(chunk, CultureInfo.InvariantCulture) }
                    : new AdamW(parameters, weightDecay: 0.01);
                foreach (var buffer in flat.GradientBuffers)
                {
                    buffer.normal_();
                }
                (optimizer, clip, step, zero) = (flat, flat.ClipGradNorm, flat.Step, flat.ZeroGrad);
            }
            else
            {
                foreach (var (_, p) in parameters)
                {
                    p.grad = TorchSharp.torch.randn_like(p);
                }
                var reference = new PerTensorAdamW(parameters.Select(p => p.Parameter).ToList(), weightDecay: 0.01);
                (optimizer, clip, step, zero) = (reference, reference.ClipGradNorm, reference.Step, reference.ZeroGrad);
            }
            var rows = new List<double[]>();
            var watch = new Stopwatch();
            for (var i = 0; i <= steps; i++)
            {
                using var scope = TorchSharp.torch.NewDisposeScope();
                Sync();
                watch.Restart();
                clip(1.0);
                Sync();
                var clipMs = watch.Elapsed.TotalMilliseconds;
                watch.Restart();
                step(1e-4);
                Sync();
                var stepMs = watch.Elapsed.TotalMilliseconds;
                watch.Restart();
                zero();
                Sync();
                var zeroMs = watch.Elapsed.TotalMilliseconds;
                if (i > 0)
                {
                    rows.Add([clipMs, stepMs, zeroMs, clipMs + stepMs + zeroMs]);
                }
            }
            double Median(int column)
            {
                var sorted = rows.Select(row => row[column]).Order().ToList();
                return Math.Round(sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2, 3);
            }
            stdout.WriteLine(JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["engine"] = "lowbit",
                ["bench"] = "optimizer",
                ["implementation"] = implementation,
                ["device"] = device.type.ToString().ToLowerInvariant(),
                ["tensors"] = shapes.Count,
                ["parameters"] = shapes.Sum(s => s[0] * s[1]),
                ["timedSteps"] = rows.Count,
                ["medianMs"] = new Dictionary<string, double> { ["clip"] = Median(0), ["step"] = Median(1), ["zeroGrad"] = Median(2), ["total"] = Median(3) },
            }));
            optimizer.Dispose();
            foreach (var (_, p) in parameters)
            {
                p.Dispose();
            }
        }
        return 0;
    }

    /// <summary>Mean milliseconds per phase (camelCase names, plus <c>total</c>) over the steps after <paramref name="warmup"/>.</summary>
    private static Dictionary<string, double> HostMilliseconds(StepPhaseTimings phases, int warmup)
    {
        var timed = phases.Steps.Skip(warmup).ToList();
        var result = new Dictionary<string, double>();
        if (timed.Count == 0)
        {
            return result;
        }
        foreach (var phase in Enum.GetValues<StepPhase>())
        {
            var name = phase.ToString();
            result[char.ToLowerInvariant(name[0]) + name[1..]] = Math.Round(timed.Average(row => row[(int)phase]), 3);
        }
        result["total"] = Math.Round(timed.Average(row => row.Sum()), 3);
        return result;
    }

    /// <summary>A random bf16 Llama (seeded) with <paramref name="layers"/> layers, written as a Hugging Face folder.</summary>
    private static void WriteRandomModel(string directory, int layers, int hidden, int intermediate, int heads, int vocab)
    {
        var config = new LlamaConfig
        {
            VocabSize = vocab, HiddenSize = hidden, IntermediateSize = intermediate, NumHiddenLayers = layers,
            NumAttentionHeads = heads, NumKeyValueHeads = heads, HeadDim = hidden / heads, MaxPositionEmbeddings = 4096,
            RmsNormEps = 1e-5, BosTokenId = 1, EosTokenIds = [2],
        };
        using var random = new LlamaForCausalLM(config, TorchSharp.torch.ScalarType.Float32, TorchSharp.torch.CPU);
        ModelIo.InitializeRandom(random, 1, std: 0.02);
        ModelIo.Save(random, directory, TorchSharp.torch.ScalarType.BFloat16);
    }
}
