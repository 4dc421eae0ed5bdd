using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tokenization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>What a fine-tuning run produced.</summary>
public sealed record FineTuneOutcome
{
    public required int Steps { get; init; }

    public required double FinalLoss { get; init; }

    public double? EvalLoss { get; init; }

    public double? EvalPerplexity { get; init; }

    /// <summary>Input positions processed in this process (resumed steps excluded).</summary>
    public required long TokensTrained { get; init; }

    public required double TrainSeconds { get; init; }

    public required double TokensPerSecond { get; init; }

    public required long PeakMemoryBytes { get; init; }

    public required string OutputPath { get; init; }

    public required long OutputBytes { get; init; }

    public required long TrainableParameters { get; init; }

    public int? ResumedFromStep { get; init; }

    public string? MergedPath { get; init; }

    public string? GgufAdapterPath { get; init; }

    public int TrainBlocks { get; init; }

    public int EvalBlocks { get; init; }
}

/// <summary>Raised after the checkpoint is written when SIGTERM asked the run to stop.</summary>
public sealed class TrainingInterruptedException(string message) : Exception(message);

/// <summary>
/// LoRA / QLoRA / full fine-tuning of a Llama-family model (see <see cref="FineTuneRequest"/>): packed blocks,
/// seeded data order (per epoch) and dropout masks (per micro-batch), AdamW with warm-up and decay, gradient
/// accumulation normalised by the trained tokens of the whole optimizer step, clipping, optional gradient
/// checkpointing, atomic checkpoints that resume to the same adapter as an uninterrupted run.
/// </summary>
public sealed class FineTuner
{
    public const string StateFile = "trainer_state.json";
    public const string OptimizerFile = "optimizer.safetensors";
    public const string CheckpointPrefix = "checkpoint-";

    private readonly FineTuneRequest _request;
    private readonly string _baseDirectory;
    private readonly Action<EngineEvent> _emit;
    private readonly Func<bool> _stopRequested;
    private readonly IReadOnlyList<PackedBlock>? _blocks;
    private readonly StepPhaseTimings? _phases;
    private string _run = "";

    /// <param name="blocks">Pre-packed training blocks instead of <c>--dataset</c> (benchmarks); no eval split.</param>
    /// <param name="phases">Receives host time per phase of every step (benchmarks).</param>
    public FineTuner(FineTuneRequest request, string baseDirectory, Action<EngineEvent> emit, Func<bool>? stopRequested = null,
        IReadOnlyList<PackedBlock>? blocks = null, StepPhaseTimings? phases = null)
    {
        _request = request;
        _baseDirectory = baseDirectory;
        _emit = emit;
        _stopRequested = stopRequested ?? (() => false);
        _blocks = blocks;
        _phases = phases;
    }

    public FineTuneOutcome Run()
    {
        var request = _request;
        if (request.GgufAdapter && request.Method == FineTuneMethod.Full)
        {
            throw new EngineInputException("--gguf-adapter: --method full trains the whole model, there is no adapter to export; use quantize --format gguf-* on the output");
        }
        // Before the first CUDA allocation (the allocator reads it once); the CPU ignores it.
        var allocatorConfig = DeviceMemory.PreferExpandableSegments();
        var device = TorchRuntime.ResolveDevice(request.Device);
        if (device.type == DeviceType.CUDA)
        {
            Log($"CUDA allocator: {DeviceMemory.AllocatorConfigVariable}={allocatorConfig ?? "(default)"}");
        }
        var config = LlamaConfig.Load(Path.Combine(_baseDirectory, "config.json"));
        var quantized = LowbitCheckpoint.IsLowbit(_baseDirectory);
        if (request.Method == FineTuneMethod.Qlora && !quantized)
        {
            throw new EngineInputException($"--base-model: --method qlora needs a quantized base (the lowbit format); {_baseDirectory} is 16-bit. Quantize it first (lowbit-engine quantize --formats lowbit) or use --method lora");
        }
        if (request.Method == FineTuneMethod.Full && quantized)
        {
            throw new EngineInputException($"--method: full trains every weight in float32 and needs a 16-bit base; {_baseDirectory} is quantized (lowbit). Use --method qlora on it, or --method full on the 16-bit model it was quantized from");
        }
        if (request.Method == FineTuneMethod.Lora && quantized)
        {
            throw new EngineInputException($"--method: lora needs a 16-bit base; {_baseDirectory} is quantized (lowbit). Use --method qlora for it");
        }
        List<PackedBlock> train, eval;
        if (_blocks is not null)
        {
            (train, eval) = (_blocks.ToList(), []);
        }
        else
        {
            var tokenizer = TokenizerLoader.Load(_baseDirectory);
            var chat = ChatTemplates.Detect(TokenizerConfig.Load(_baseDirectory).ChatTemplate);
            var examples = FineTuneDataset.Read(request.Dataset, request.DatasetFormat, tokenizer, chat);
            var pad = config.PadTokenId ?? tokenizer.EosId ?? 0;
            var blocks = FineTuneDataset.Pack(examples, request.SeqLength, request.DatasetFormat, pad);
            (train, eval) = Split(blocks, request.EvalSplit, request.Seed);
            Log(FormattableString.Invariant($"dataset: {examples.Count} examples -> {blocks.Count} blocks of {request.SeqLength} tokens ({train.Count} train, {eval.Count} eval)"));
        }

        var computeDtype = request.Method == FineTuneMethod.Full || device.type != DeviceType.CUDA ? ScalarType.Float32 : ScalarType.BFloat16;
        var shardDevices = TrainingShards.ResolveDevices(request, device, device.type == DeviceType.CUDA ? cuda.device_count() : 0);
        var watchLoad = Stopwatch.StartNew();
        Serving.ShardPlan? plan = null;
        if (shardDevices.Count > 0)
        {
            plan = TrainingShards.Plan(_baseDirectory, config, computeDtype, request, shardDevices);
            for (var s = 0; s < shardDevices.Count; s++)
            {
                Log(plan.Describe(s, "trained state (weights, gradients, AdamW moments)"));
            }
            // The batch enters on the first shard.
            device = shardDevices[0];
        }
        using var model = plan is null ? ModelLoading.Load(_baseDirectory, computeDtype, device) : TrainingShards.Load(_baseDirectory, computeDtype, plan);
        var memoryDevices = plan is null ? [device] : shardDevices.DistinctBy(Serving.PipelinePlacement.Name).ToArray();
        Log(FormattableString.Invariant($"loaded {request.Method.ToString().ToLowerInvariant()} base in {computeDtype} on {device.type}{(plan is null ? "" : $" over {shardDevices.Count} pipeline shards")} in {watchLoad.Elapsed.TotalSeconds:F1} s"));

        var settings = new LoraSettings
        {
            R = request.R, Alpha = request.Alpha, Dropout = request.Dropout, TargetModules = request.TargetModules, UseRslora = request.Rslora,
        };
        IReadOnlyList<(string Path, LoraLinear Module)> modules = [];
        List<(string Name, Tensor Parameter)> trainable;
        if (request.Method == FineTuneMethod.Full)
        {
            trainable = model.named_parameters().Select(p => (p.name, (Tensor)p.parameter)).ToList();
            foreach (var (_, p) in trainable)
            {
                p.requires_grad_(true);
            }
        }
        else
        {
            modules = LoraModel.Wrap(model, settings, request.Seed, device, plan is null ? null : plan.ProjectionDevice);
            trainable = modules.SelectMany(m => new[] { (m.Path + ".lora_A", (Tensor)m.Module.A), (m.Path + ".lora_B", (Tensor)m.Module.B) }).ToList();
        }
        model.Model.GradientCheckpointing = request.GradientCheckpointing;
        foreach (var packed in model.modules().OfType<PackedQuantizedLinear>())
        {
            packed.Owner = model.Model;
        }
        foreach (var (_, module) in modules)
        {
            module.Owner = model.Model;
        }
        using var optimizer = new AdamW(trainable, weightDecay: request.WeightDecay);
        var trainableCount = trainable.Sum(t => t.Parameter.NumberOfElements);

        var microPerEpoch = (train.Count + request.MicroBatch - 1) / request.MicroBatch;
        var stepsPerEpoch = Math.Max(1, (microPerEpoch + request.GradAccumulation - 1) / request.GradAccumulation);
        var totalSteps = request.MaxSteps ?? request.Epochs * stepsPerEpoch;
        var startStep = 0;
        int? resumedFrom = null;
        // Only checkpoints carry (and `latest` compares) the fingerprint: a run without them does not hash its dataset.
        _run = request.CheckpointDir is null ? ""
            : RunFingerprint(request, request.WarmupStepsOf(totalSteps), _blocks is null ? DatasetDigest(request.Dataset) : BlocksDigest(_blocks));
        if (request.ResumeFrom is { } resume && ResumePoint(resume) is { } checkpoint)
        {
            startStep = Resume(checkpoint, model, modules, optimizer, totalSteps);
            resumedFrom = startStep;
            Log(FormattableString.Invariant($"resumed from step {startStep} ({checkpoint})"));
        }

        model.train();
        using var graph = CudaGraphFor(request, model, device);
        var watch = Stopwatch.StartNew();
        long tokens = 0;
        var peaks = memoryDevices.Select(DeviceMemory.Used).ToArray();
        double lastLoss = double.NaN;
        var permutations = new Dictionary<int, int[]>();
        for (var step = startStep + 1; step <= totalSteps; step++)
        {
            var lr = LrSchedule.At(request.LrScheduler, request.LearningRate, request.WarmupStepsOf(totalSteps), totalSteps, step);
            var micro = Enumerable.Range(0, request.GradAccumulation)
                .Select(a => MicroBatch((long)(step - 1) * request.GradAccumulation + a, train, microPerEpoch, permutations))
                .ToList();
            var stepTargets = Math.Max(1, micro.Sum(m => m.Blocks.Sum(b => b.TrainedTargets)));
            _phases?.BeginStep();
            using (var scope = NewDisposeScope())
            {
                var lossSum = zeros(1, ScalarType.Float32, model.OutputDevice);
                foreach (var (index, batch) in micro)
                {
                    LoraLinear.DropoutSeed = request.Seed * 1_000_003L + index;
                    var loss = graph?.TryRun(batch, stepTargets);
                    if (loss is null)
                    {
                        using var targets = ((double)stepTargets).ToScalar();   // held: see AdamW.Step
                        loss = LossSum(model, batch, device, out _).div(targets);
                        loss.backward();
                    }
                    // Sampled here too (not only after the step), so a pool shrinking within the step could not hide its peak.
                    DeviceMemory.Sample(memoryDevices, peaks);
                    GradientCheckpoint.Release(model.Model);
                    lossSum.add_(loss.detach(), Scalars.One);
                    tokens += batch.Sum(b => (long)b.Ids.Length - 1);
                }
                _phases?.Mark(StepPhase.ForwardBackward, device);
                if (request.MaxGradNorm > 0)
                {
                    optimizer.ClipGradNorm(request.MaxGradNorm);
                }
                _phases?.Mark(StepPhase.Clip, device);
                optimizer.Step(lr);
                _phases?.Mark(StepPhase.OptimizerStep, device);
                optimizer.ZeroGrad();
                _phases?.Mark(StepPhase.ZeroGrad, device);
                lastLoss = lossSum.item<float>();
                _phases?.Mark(StepPhase.LossSync, device);
            }
            DeviceMemory.Sample(memoryDevices, peaks);
            var elapsed = watch.Elapsed.TotalSeconds;
            var done = step - startStep;
            _emit(new TrainEvent
            {
                Step = step,
                TotalSteps = totalSteps,
                Epoch = Math.Round((double)step * request.GradAccumulation / microPerEpoch, 4),
                Loss = Math.Round(lastLoss, 5),
                TokensPerSecond = Math.Round(tokens / Math.Max(elapsed, 1e-9), 1),
                LearningRate = lr,
                EtaSeconds = Math.Round(elapsed / done * (totalSteps - step), 1),
                PeakMemoryBytes = peaks.Max(),
                PeakMemoryBytesPerDevice = plan is null ? null : peaks.ToArray(),
            });
            var stop = _stopRequested();
            if (request.CheckpointDir is { } dir && (stop || (request.SaveSteps is { } every && step % every == 0 && step < totalSteps)))
            {
                SaveCheckpoint(dir, step, totalSteps, model, modules, settings, optimizer);
            }
            _phases?.EndStep();
            if (stop)
            {
                throw new TrainingInterruptedException(request.CheckpointDir is null
                    ? FormattableString.Invariant($"stopped by SIGTERM after step {step}; no --checkpoint-dir, so nothing was saved")
                    : FormattableString.Invariant($"stopped by SIGTERM after step {step}; checkpoint written to {Path.Combine(request.CheckpointDir, CheckpointPrefix + step)}"));
            }
        }
        LoraLinear.DropoutSeed = null;
        var trainSeconds = watch.Elapsed.TotalSeconds;
        model.eval();
        double? evalLoss = eval.Count > 0 ? Evaluate(model, eval, request.MicroBatch, device) : null;
        DeviceMemory.Sample(memoryDevices, peaks);
        if (plan is not null)
        {
            Log(string.Join(", ", memoryDevices.Select((d, i) => FormattableString.Invariant($"peak {Serving.PipelinePlacement.Name(d)} {peaks[i] / (1 << 20)} MiB"))));
        }
        if (request.CheckpointDir is { } finalDir && totalSteps > startStep)
        {
            SaveCheckpoint(finalDir, totalSteps, totalSteps, model, modules, settings, optimizer);
        }

        long bytes;
        string? gguf = null;
        if (request.Method == FineTuneMethod.Full)
        {
            ModelIo.Save(model, request.Out, config.TorchDtype is { } t ? ModelIo.ParseDtype(t) : ScalarType.BFloat16);
            CopyTokenizer(_baseDirectory, request.Out);
            bytes = new DirectoryInfo(request.Out).EnumerateFiles().Sum(f => f.Length);
        }
        else
        {
            using var adapter = LoraModel.Extract(modules, settings, request.BaseModel);
            bytes = adapter.Write(request.Out);
            if (request.GgufAdapter)
            {
                gguf = Path.Combine(request.Out, "adapter.gguf");
                GgufLoraAdapter.Write(gguf, adapter, config);
                Log($"GGUF LoRA adapter written to {gguf}");
            }
        }
        string? merged = null;
        if (request.Merge && request.Method != FineTuneMethod.Full)
        {
            merged = Path.Combine(request.Out, "merged");
            // The base's stored dtype (16-bit for Hugging Face checkpoints; a float32 base stays float32).
            var storeAs = ModelIo.ParseDtype(config.TorchDtype ?? "bfloat16");
            LoraModel.Merge(model, ScalarType.Float32);
            ModelIo.Save(model, merged, storeAs);
            CopyTokenizer(_baseDirectory, merged);
            Log($"merged 16-bit checkpoint written to {merged}");
        }
        return new FineTuneOutcome
        {
            Steps = totalSteps,
            FinalLoss = lastLoss,
            EvalLoss = evalLoss,
            EvalPerplexity = evalLoss is { } l ? Math.Exp(l) : null,
            TokensTrained = tokens,
            TrainSeconds = trainSeconds,
            TokensPerSecond = tokens / Math.Max(trainSeconds, 1e-9),
            PeakMemoryBytes = peaks.Max(),
            OutputPath = request.Out,
            OutputBytes = bytes,
            TrainableParameters = trainableCount,
            ResumedFromStep = resumedFrom,
            MergedPath = merged,
            GgufAdapterPath = gguf,
            TrainBlocks = train.Count,
            EvalBlocks = eval.Count,
        };
    }

    /// <summary>The captured micro-step when <c>--cuda-graph</c> asks for it and the run allows it (else null: eager, said once).</summary>
    private TrainingGraph? CudaGraphFor(FineTuneRequest request, LlamaForCausalLM model, Device device)
    {
        if (!request.CudaGraph)
        {
            return null;
        }
        var reason = StepGraphs is null ? TrainingGraph.Unsupported(request, device) : TrainingGraph.Unsupported(request);
        if (reason is not null)
        {
            Log("--cuda-graph: not used, " + reason);
            return null;
        }
        return StepGraphs is null ? new TrainingGraph(model, device, Log) : new TrainingGraph(model, device, Log, StepGraphs);
    }

    /// <summary>Tests: what <c>--cuda-graph</c> records the micro-step with instead of a CUDA graph (then on any device).</summary>
    internal Func<Decoding.IStepGraph>? StepGraphs { get; init; }

    /// <summary>Mean loss per trained target over <paramref name="blocks"/> (no dropout, no gradients).</summary>
    public static double Evaluate(LlamaForCausalLM model, IReadOnlyList<PackedBlock> blocks, int microBatch, Device device)
    {
        using var noGrad = no_grad();
        double sum = 0;
        long count = 0;
        device = model.Model.LayerDevices?[0] ?? device;
        for (var i = 0; i < blocks.Count; i += microBatch)
        {
            using var scope = NewDisposeScope();
            var batch = blocks.Skip(i).Take(microBatch).ToList();
            var loss = LossSum(model, batch, device, out _);
            sum += loss.to(ScalarType.Float64).item<double>();
            count += batch.Sum(b => b.TrainedTargets);
        }
        return sum / Math.Max(1, count);
    }

    /// <summary>
    /// The summed float32 cross-entropy over the trained targets of <paramref name="batch"/>; blocks that pack several
    /// documents run with their <see cref="PackedLayout"/> (no attention across documents, positions per document).
    /// With a frozen output projection (LoRA, QLoRA) the loss is <see cref="ChunkedCrossEntropy"/>, which never holds
    /// the <c>[B·T, vocab]</c> logits; <paramref name="fullLogits"/> (or a trained head, <c>--method full</c>) computes
    /// <c>cross_entropy(logits.float())</c> over the whole logits instead.
    /// </summary>
    public static Tensor LossSum(LlamaForCausalLM model, IReadOnlyList<PackedBlock> batch, Device device, out Tensor input, bool fullLogits = false)
    {
        Tensor target;
        (input, target) = Tensors(batch, device);
        var layout = batch.Any(b => b.IsPacked) ? Layout(batch, (int)input.shape[1], device) : null;

        return LossSum(model, input, target, layout, fullLogits);
    }

    /// <summary>Per-token positions and the block-diagonal causal mask of <paramref name="batch"/>'s documents (a row without documents is one).</summary>
    public static PackedLayout Layout(IReadOnlyList<PackedBlock> batch, int length, Device device) =>
        PackedLayout.Of(batch.Select(b => b.Documents ?? new int[b.Ids.Length]).ToList(), length, device);

    /// <summary>As above over device tensors already made: inputs and targets <c>[B, L]</c> (no host copy: a CUDA graph records this).</summary>
    public static Tensor LossSum(LlamaForCausalLM model, Tensor input, Tensor target, PackedLayout? layout, bool fullLogits = false)
    {
        using var scope = NewDisposeScope();
        var hidden = model.Hidden(input, layout);
        if (model.Model.LayerDevices is not null)
        {
            // Split over shards: the final hidden state and the targets meet where the head computes the loss.
            (hidden, target) = (hidden.to(model.OutputDevice), target.to(model.OutputDevice));
        }
        if (!fullLogits && !model.HeadTrainable)
        {
            return ChunkedCrossEntropy.Sum(model, hidden.reshape(-1, hidden.shape[^1]), target.reshape(-1), model.Model).MoveToOuterDisposeScope();
        }
        var logits = model.Logits(hidden);
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[^1]).to(ScalarType.Float32), target.reshape(-1),
            ignore_index: ChunkedCrossEntropy.IgnoreIndex, reduction: nn.Reduction.Sum).MoveToOuterDisposeScope();
    }

    /// <summary>Inputs <c>[B, L]</c> and targets <c>[B, L]</c> (−100 where the loss does not count).</summary>
    public static (Tensor Input, Tensor Target) Tensors(IReadOnlyList<PackedBlock> batch, Device device)
    {
        var length = batch[0].Ids.Length - 1;
        var input = new long[batch.Count * length];
        var target = new long[batch.Count * length];
        for (var b = 0; b < batch.Count; b++)
        {
            var block = batch[b];
            for (var t = 0; t < length; t++)
            {
                input[b * length + t] = block.Ids[t];
                target[b * length + t] = block.IsTarget(t + 1) ? block.Ids[t + 1] : -100;
            }
        }
        return (tensor(input, [batch.Count, length], device: device), tensor(target, [batch.Count, length], device: device));
    }

    /// <summary>Seeded shuffle of the blocks; the first ⌈split·n⌉ (at most n − 1) are held out.</summary>
    public static (List<PackedBlock> Train, List<PackedBlock> Eval) Split(IReadOnlyList<PackedBlock> blocks, double split, int seed)
    {
        var order = Enumerable.Range(0, blocks.Count).ToArray();
        new Random(seed).Shuffle(order);
        var held = split <= 0 || blocks.Count < 2 ? 0 : Math.Min(blocks.Count - 1, (int)Math.Ceiling(split * blocks.Count));
        return (order.Skip(held).Select(i => blocks[i]).ToList(), order.Take(held).Select(i => blocks[i]).ToList());
    }

    private (long Index, List<PackedBlock> Blocks) MicroBatch(long index, IReadOnlyList<PackedBlock> train, int microPerEpoch, Dictionary<int, int[]> permutations)
    {
        var epoch = (int)(index / microPerEpoch);
        var within = (int)(index % microPerEpoch);
        if (!permutations.TryGetValue(epoch, out var order))
        {
            order = Enumerable.Range(0, train.Count).ToArray();
            new Random(unchecked(_request.Seed * 31 + epoch + 1)).Shuffle(order);
            permutations[epoch] = order;
        }
        var blocks = order.Skip(within * _request.MicroBatch).Take(_request.MicroBatch).Select(i => train[i]).ToList();
        return (index, blocks);
    }

    private void SaveCheckpoint(string root, int step, int totalSteps, LlamaForCausalLM model,
        IReadOnlyList<(string Path, LoraLinear Module)> modules, LoraSettings settings, AdamW optimizer)
    {
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, CheckpointPrefix + step.ToString(CultureInfo.InvariantCulture));
        var temp = Path.Combine(root, $".tmp-{CheckpointPrefix}{step}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(temp);
        if (_request.Method == FineTuneMethod.Full)
        {
            ModelIo.Save(model, temp, ScalarType.Float32);
        }
        else
        {
            using var adapter = LoraModel.Extract(modules, settings, _request.BaseModel);
            adapter.Write(temp);
        }
        optimizer.Save(Path.Combine(temp, OptimizerFile));
        var state = new JsonObject
        {
            ["step"] = step,
            ["total_steps"] = totalSteps,
            ["optimizer_steps"] = optimizer.Steps,
            ["micro_batches_done"] = (long)step * _request.GradAccumulation,
            ["seed"] = _request.Seed,
            ["rng"] = "data order: System.Random(seed*31+epoch+1) per epoch; dropout: generator(seed*1000003+micro_batch_index, module index) per micro-batch",
            ["lr_scheduler"] = ProtocolNames.Of(_request.LrScheduler),
            ["learning_rate"] = _request.LearningRate,
            ["warmup_steps"] = _request.WarmupStepsOf(totalSteps),
            ["grad_accumulation"] = _request.GradAccumulation,
            ["micro_batch"] = _request.MicroBatch,
            ["seq_length"] = _request.SeqLength,
            ["method"] = ProtocolNames.Of(_request.Method),
            ["run"] = _run,
        };
        File.WriteAllText(Path.Combine(temp, StateFile), state.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        if (Directory.Exists(final))
        {
            Directory.Delete(final, recursive: true);
        }
        Directory.Move(temp, final);
        _emit(new CheckpointEvent { Step = step, Path = final });
        // Keep this run's three newest checkpoints. The folder holds one run: another run's checkpoints (written before
        // the spec changed) would collide with this run's step numbers, and `latest` never resumes them, so they go.
        var checkpoints = Checkpoints(root).Select(c => (c.Path, Mine: RunOf(c.Path) == _run)).ToList();
        var others = checkpoints.Where(c => !c.Mine).ToList();
        foreach (var old in checkpoints.Where(c => c.Mine).Skip(3).Concat(others))
        {
            Directory.Delete(old.Path, recursive: true);
        }
        if (others.Count > 0)
        {
            Log(FormattableString.Invariant($"removed {others.Count} checkpoint(s) of another run from {root} ({string.Join(", ", others.Select(o => Path.GetFileName(o.Path)))})"));
        }
    }

    /// <summary>
    /// The checkpoint <c>--resume-from</c> names: the path itself, or for <see cref="FineTuneRequest.ResumeLatest"/> the
    /// newest complete checkpoint of this run in <c>--checkpoint-dir</c> (null: none, the run starts at step 0).
    /// </summary>
    private string? ResumePoint(string resume)
    {
        if (resume != FineTuneRequest.ResumeLatest)
        {
            return resume;
        }
        var root = _request.CheckpointDir!;
        var others = 0;
        foreach (var (_, path) in Checkpoints(root))
        {
            if (RunOf(path) == _run)
            {
                return path;
            }
            others++;
        }
        Log(others == 0
            ? $"--resume-from latest: no checkpoint in {root} yet; starting at step 0"
            : FormattableString.Invariant($"--resume-from latest: {others} checkpoint(s) in {root} belong to another run (other base, data or training settings) and are not resumed; starting at step 0"));
        return null;
    }

    /// <summary>The <c>run</c> fingerprint in a checkpoint's state ("" when absent: written before fingerprints, never resumed by <c>latest</c>).</summary>
    private static string RunOf(string checkpoint)
    {
        try
        {
            return (string?)JsonNode.Parse(File.ReadAllText(Path.Combine(checkpoint, StateFile)))?["run"] ?? "";
        }
        catch (Exception e) when (e is IOException or JsonException or InvalidOperationException)
        {
            return "";
        }
    }

    /// <summary>Flags of a fine-tune request that do not change the steps it takes (where outputs go, the device, how it runs).</summary>
    private static readonly HashSet<string> OutsideTheTrajectory = new(StringComparer.Ordinal)
    {
        "--out", "--checkpoint-dir", "--resume-from", "--save-steps", "--result-file", "--device", "--gradient-checkpointing",
        "--cuda-graph", "--merge", "--gguf-adapter", "--dataset", PipelineSplit.ShardsFlag, ShardArguments.DevicesFlag,
    };

    /// <summary>
    /// What makes two runs the same training trajectory (a resumed run continues it): every flag of the request but
    /// <see cref="OutsideTheTrajectory"/> (so a flag added later counts by default), the data by its bytes (not its path),
    /// and the resolved warm-up. Not the device, the shard split, checkpointing, the graph or where outputs go, so a pod
    /// replaced onto another GPU type or count resumes. 16 hex digits of a SHA-256.
    /// </summary>
    internal static string RunFingerprint(FineTuneRequest r, int warmupSteps, string dataDigest)
    {
        var args = r.ToArgs();
        var key = new System.Text.StringBuilder();
        for (var i = 1; i + 1 < args.Count; i += 2)
        {
            if (!OutsideTheTrajectory.Contains(args[i]))
            {
                key.Append(args[i]).Append('=').Append(args[i + 1]).Append('\n');
            }
        }
        key.Append(CultureInfo.InvariantCulture, $"data={dataDigest}\nwarmup_steps={warmupSteps}\n");
        var hash = System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(key.ToString()));
        return Convert.ToHexStringLower(hash)[..16];
    }

    /// <summary>SHA-256 of the dataset's bytes (a folder: its files' relative paths and bytes, in ordinal order).</summary>
    internal static string DatasetDigest(string path)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        var files = File.Exists(path) ? [path]
            : Directory.Exists(path) ? Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray()
            : Array.Empty<string>();
        var buffer = new byte[1 << 20];
        foreach (var file in files)
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(Path.GetRelativePath(path, file) + "\0"));
            using var stream = File.OpenRead(file);
            int read;
            while ((read = stream.Read(buffer, 0, buffer.Length)) > 0)
            {
                sha.AppendData(buffer, 0, read);
            }
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>The digest of pre-packed blocks (benchmarks): their token ids and trained flags.</summary>
    private static string BlocksDigest(IReadOnlyList<PackedBlock> blocks)
    {
        using var sha = System.Security.Cryptography.IncrementalHash.CreateHash(System.Security.Cryptography.HashAlgorithmName.SHA256);
        foreach (var b in blocks)
        {
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(b.Ids.AsSpan()));
            sha.AppendData(System.Runtime.InteropServices.MemoryMarshal.AsBytes(b.Trained.AsSpan()));
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    /// <summary>Complete checkpoints under <paramref name="root"/>, newest first.</summary>
    public static IEnumerable<(int Step, string Path)> Checkpoints(string root) =>
        Directory.Exists(root)
            ? Directory.EnumerateDirectories(root, CheckpointPrefix + "*")
                .Select(d => (Ok: int.TryParse(Path.GetFileName(d)[CheckpointPrefix.Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var s), Step: s, Path: d))
                .Where(c => c.Ok && File.Exists(Path.Combine(c.Path, StateFile)))
                .OrderByDescending(c => c.Step)
                .Select(c => (c.Step, c.Path))
            : [];

    private int Resume(string path, LlamaForCausalLM model, IReadOnlyList<(string Path, LoraLinear Module)> modules, AdamW optimizer, int totalSteps)
    {
        var directory = File.Exists(Path.Combine(path, StateFile)) ? path
            : Checkpoints(path).Select(c => c.Path).FirstOrDefault()
              ?? throw new EngineInputException($"--resume-from: {path} is neither a checkpoint ({StateFile}) nor a folder holding {CheckpointPrefix}N checkpoints");
        var state = JsonNode.Parse(File.ReadAllText(Path.Combine(directory, StateFile)))!.AsObject();
        var step = state["step"]!.GetValue<int>();
        if (state["total_steps"]?.GetValue<int>() is { } total && total != totalSteps)
        {
            throw new EngineInputException($"--resume-from: the checkpoint was written by a run of {total} steps, this run has {totalSteps}; resume with the same dataset, --epochs/--max-steps, --micro-batch and --grad-accumulation");
        }
        if (_request.Method == FineTuneMethod.Full)
        {
            using var checkpoint = Checkpoint.Open(directory);
            ModelIo.LoadInto(model, checkpoint);
        }
        else
        {
            using var adapter = PeftAdapter.Read(directory, model.parameters().First().device);
            foreach (var (p, module) in modules)
            {
                if (!adapter.Modules.TryGetValue(p, out var weights))
                {
                    throw new EngineInputException($"--resume-from: the checkpoint has no weights for {p} (different --target-modules?)");
                }
                module.Load(weights);
            }
        }
        optimizer.Load(Path.Combine(directory, OptimizerFile));
        return step;
    }


    private static void CopyTokenizer(string from, string to)
    {
        foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "generation_config.json" })
        {
            if (File.Exists(Path.Combine(from, f)))
            {
                File.Copy(Path.Combine(from, f), Path.Combine(to, f), overwrite: true);
            }
        }
    }

    private void Log(string message) => _emit(new LogEvent { Level = "info", Message = message });
}
