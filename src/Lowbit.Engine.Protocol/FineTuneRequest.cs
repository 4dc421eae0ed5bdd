namespace Lowbit.Engine.Protocol;

/// <summary>
/// <c>finetune --base-model SRC --method lora|qlora|full --dataset FILE --dataset-format alpaca|chat|text --out DIR
/// [--r N] [--alpha X] [--dropout X] [--target-modules q_proj,v_proj] [--epochs N | --max-steps N] [--learning-rate X]
/// [--micro-batch N] [--grad-accumulation N] [--seq-length N] [--checkpoint-dir DIR] [--resume-from DIR|latest] [--seed N]
/// [--device cpu|cuda] [--result-file F] [--save-steps N] [--eval-split X] [--lr-scheduler linear|cosine|constant]
/// [--warmup-steps N | --warmup-ratio X] [--max-grad-norm X] [--weight-decay X] [--gradient-checkpointing true] [--rslora true]
/// [--merge true] [--gguf-adapter true] [--cuda-graph true] [--shards N] [--shard-devices D,D]</c>. Boolean flags take <c>true</c>/<c>false</c>; absent is false.
/// </summary>
public sealed record FineTuneRequest : EngineRequest, IShardedRequest
{
    /// <summary>Linear modules a LoRA adapter may target (Llama naming).</summary>
    public static IReadOnlyList<string> AcceptedTargetModules { get; } =
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    private static readonly string[] Flags =
    [
        "--base-model", CommonFlags.Revision, "--method", "--r", "--alpha", "--dropout", "--target-modules", "--dataset",
        "--dataset-format", "--epochs", "--max-steps", "--learning-rate", "--micro-batch", "--grad-accumulation",
        "--seq-length", "--checkpoint-dir", "--resume-from", "--seed", CommonFlags.Out, CommonFlags.Device, CommonFlags.ResultFile,
        "--save-steps", "--eval-split", "--lr-scheduler", "--warmup-steps", "--warmup-ratio", "--max-grad-norm", "--weight-decay",
        "--gradient-checkpointing", "--rslora", "--merge", "--gguf-adapter", "--cuda-graph", .. ShardArguments.Flags,
    ];

    /// <summary>Base model source (a quantized model's folder for qlora).</summary>
    public required string BaseModel { get; init; }

    public string? Revision { get; init; }

    public required FineTuneMethod Method { get; init; }

    /// <summary>LoRA rank.</summary>
    public int R { get; init; } = 16;

    /// <summary>LoRA alpha (scaling = alpha / r).</summary>
    public double Alpha { get; init; } = 32;

    public double Dropout { get; init; } = 0.05;

    public IReadOnlyList<string> TargetModules { get; init => field = ValueList.Of(value); } = new ValueList<string>(["q_proj", "v_proj"]);

    public required string Dataset { get; init; }

    public DatasetFormat DatasetFormat { get; init; } = DatasetFormat.Alpaca;

    /// <summary>Passes over the dataset; ignored when <see cref="MaxSteps"/> is set.</summary>
    public int Epochs { get; init; } = 1;

    /// <summary>Optimizer steps to stop after, if set.</summary>
    public int? MaxSteps { get; init; }

    public double LearningRate { get; init; } = 2e-4;

    public int MicroBatch { get; init; } = 1;

    public int GradAccumulation { get; init; } = 1;

    public int SeqLength { get; init; } = 512;

    /// <summary>Where periodic checkpoints go (a volume that survives pod retries).</summary>
    public string? CheckpointDir { get; init; }

    /// <summary>
    /// A checkpoint to resume from: a <c>checkpoint-N</c> folder, a folder holding them (the newest complete one), or
    /// <see cref="ResumeLatest"/>.
    /// </summary>
    public string? ResumeFrom { get; init; }

    /// <summary>
    /// <c>--resume-from latest</c>: the newest complete checkpoint of this same run (same base, data and training
    /// settings: the checkpoint's <c>run</c> fingerprint) in <see cref="CheckpointDir"/>, or step 0 when there is none —
    /// what a pod that may be replaced passes every time (preemption, node loss, a retried failure), like transformers'
    /// <c>resume_from_checkpoint=True</c>. Checkpoints of other runs in the folder are not resumed.
    /// </summary>
    public const string ResumeLatest = "latest";

    public int Seed { get; init; }

    public required string Out { get; init; }

    public ComputeDevice? Device { get; init; }

    public string? ResultFile { get; init; }

    /// <summary>Write a checkpoint to <see cref="CheckpointDir"/> every this many optimizer steps (and at the end, and on SIGTERM).</summary>
    public int? SaveSteps { get; init; }

    /// <summary>Fraction of the dataset's examples held out for evaluation (0 disables the eval split).</summary>
    public double EvalSplit { get; init; } = 0.05;

    public LrScheduler LrScheduler { get; init; } = LrScheduler.Linear;

    /// <summary>Optimizer steps of linear warm-up from 0 to <see cref="LearningRate"/>.</summary>
    public int WarmupSteps { get; init; }

    /// <summary>Warm-up as a fraction of the run's optimizer steps (used when <see cref="WarmupSteps"/> is 0).</summary>
    public double? WarmupRatio { get; init; }

    /// <summary>Warm-up steps of a run of <paramref name="totalSteps"/>: <see cref="WarmupSteps"/>, else the ratio's share.</summary>
    public int WarmupStepsOf(long totalSteps) =>
        WarmupSteps > 0 || WarmupRatio is not { } ratio ? WarmupSteps : (int)Math.Ceiling(ratio * totalSteps);

    /// <summary>Clip the global gradient norm to this (0 disables clipping).</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>AdamW decoupled weight decay.</summary>
    public double WeightDecay { get; init; }

    /// <summary>Recompute each decoder layer's activations in the backward pass instead of keeping them.</summary>
    public bool GradientCheckpointing { get; init; }

    /// <summary>rsLoRA: scaling alpha/√r instead of alpha/r.</summary>
    public bool Rslora { get; init; }

    /// <summary>Also write the base with the adapter merged in, as a 16-bit Hugging Face checkpoint, to <c>OUT/merged</c>.</summary>
    public bool Merge { get; init; }

    /// <summary>Also write the adapter as a llama.cpp GGUF LoRA adapter, <c>OUT/adapter.gguf</c>.</summary>
    public bool GgufAdapter { get; init; }

    /// <summary>
    /// Capture one micro-step as a CUDA graph and replay it (LoRA/QLoRA on CUDA with the native library; not with
    /// gradient checkpointing plus dropout). Experimental: off by default until measured (docs/finetune.md).
    /// </summary>
    public bool CudaGraph { get; init; }

    /// <summary>
    /// <c>--shards</c>: the decoder layers split over this many devices as a pipeline (docs/finetune.md, <i>Training
    /// across GPUs</i>); 1 is no split. Written on the command line only when above 1. Not part of the run's
    /// trajectory: a checkpoint resumes on another shard count.
    /// </summary>
    public int Shards { get; init; } = 1;

    /// <summary><c>--shard-devices</c>: the device of each shard (<c>cuda:0,cuda:0</c> stacks two shards on one GPU); empty: <see cref="ResolveShardDevices"/>'s default.</summary>
    public IReadOnlyList<string> ShardDevices { get; init => field = ValueList.Of(value); } = ValueList<string>.Empty;

    /// <summary>The device of each shard: <see cref="ShardDevices"/> when given, else <c>cuda:0</c> … <c>cuda:N-1</c> on CUDA and <c>cpu</c> on the CPU.</summary>
    public IReadOnlyList<string> ResolveShardDevices(bool cuda) => ShardArguments.Resolve(this, cuda);

    public override string Verb => EngineVerbs.FineTune;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add("--base-model", BaseModel)
        .Add(CommonFlags.Revision, Revision)
        .Add("--method", (FineTuneMethod?)Method)
        .Add("--r", R)
        .Add("--alpha", Alpha)
        .Add("--dropout", Dropout)
        .Add("--target-modules", TargetModules)
        .Add("--dataset", Dataset)
        .Add("--dataset-format", (DatasetFormat?)DatasetFormat)
        .Add("--epochs", Epochs)
        .Add("--max-steps", MaxSteps)
        .Add("--learning-rate", LearningRate)
        .Add("--micro-batch", MicroBatch)
        .Add("--grad-accumulation", GradAccumulation)
        .Add("--seq-length", SeqLength)
        .Add("--checkpoint-dir", CheckpointDir)
        .Add("--resume-from", ResumeFrom)
        .Add("--seed", Seed)
        .Add(CommonFlags.Out, Out)
        .Add(CommonFlags.Device, Device)
        .Add(CommonFlags.ResultFile, ResultFile)
        .Add("--save-steps", SaveSteps)
        .Add("--eval-split", EvalSplit)
        .Add("--lr-scheduler", (LrScheduler?)LrScheduler)
        .Add("--warmup-steps", WarmupSteps)
        .Add("--warmup-ratio", WarmupRatio)
        .Add("--max-grad-norm", MaxGradNorm)
        .Add("--weight-decay", WeightDecay)
        .Add("--gradient-checkpointing", GradientCheckpointing)
        .Add("--rslora", Rslora)
        .Add("--merge", Merge)
        .Add("--gguf-adapter", GgufAdapter)
        .Add("--cuda-graph", CudaGraph)
        .AddShards(this)
        .Build();

    public static new FineTuneRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.FineTune, args, Flags);
        var defaults = new FineTuneRequest { BaseModel = "", Method = FineTuneMethod.Lora, Dataset = "", Out = "" };
        var targets = r.List("--target-modules", AcceptedTargetModules);
        var device = r.Enum<ComputeDevice>(CommonFlags.Device);
        var (shards, shardDevices) = ShardArguments.Read(r, device);
        var request = new FineTuneRequest
        {
            BaseModel = r.Required("--base-model", CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            Method = r.Enum<FineTuneMethod>("--method")
                ?? throw new ProtocolArgumentException("--method", "required", ProtocolNames.Accepted<FineTuneMethod>()),
            R = r.Int("--r", 1, 1024) ?? defaults.R,
            Alpha = r.Double("--alpha", 1e-6, 1e6) ?? defaults.Alpha,
            Dropout = r.Double("--dropout", 0, 0.9) ?? defaults.Dropout,
            TargetModules = targets.Count > 0 ? targets : defaults.TargetModules,
            Dataset = r.Required("--dataset", "a JSONL or text file"),
            DatasetFormat = r.Enum<DatasetFormat>("--dataset-format") ?? defaults.DatasetFormat,
            Epochs = r.Int("--epochs", 1, 10_000) ?? defaults.Epochs,
            MaxSteps = r.Int("--max-steps", 1, int.MaxValue),
            LearningRate = r.Double("--learning-rate", 1e-9, 1.0) ?? defaults.LearningRate,
            MicroBatch = r.Int("--micro-batch", 1, 4096) ?? defaults.MicroBatch,
            GradAccumulation = r.Int("--grad-accumulation", 1, 4096) ?? defaults.GradAccumulation,
            SeqLength = r.Int("--seq-length", 8, 1 << 20) ?? defaults.SeqLength,
            CheckpointDir = r.Optional("--checkpoint-dir"),
            ResumeFrom = r.Optional("--resume-from"),
            Seed = r.Int("--seed", 0, int.MaxValue) ?? defaults.Seed,
            Out = r.Required(CommonFlags.Out, "an output directory"),
            Device = device,
            ResultFile = r.Optional(CommonFlags.ResultFile),
            SaveSteps = r.Int("--save-steps", 1, int.MaxValue),
            EvalSplit = r.Double("--eval-split", 0, 0.5) ?? defaults.EvalSplit,
            LrScheduler = r.Enum<LrScheduler>("--lr-scheduler") ?? defaults.LrScheduler,
            WarmupSteps = r.Int("--warmup-steps", 0, int.MaxValue) ?? defaults.WarmupSteps,
            WarmupRatio = r.Double("--warmup-ratio", 0, 0.5),
            MaxGradNorm = r.Double("--max-grad-norm", 0, 1e6) ?? defaults.MaxGradNorm,
            WeightDecay = r.Double("--weight-decay", 0, 10) ?? defaults.WeightDecay,
            GradientCheckpointing = r.Bool("--gradient-checkpointing"),
            Rslora = r.Bool("--rslora"),
            Merge = r.Bool("--merge"),
            GgufAdapter = r.Bool("--gguf-adapter"),
            CudaGraph = r.Bool("--cuda-graph"),
            Shards = shards,
            ShardDevices = shardDevices,
        };
        if (request.ResumeFrom == ResumeLatest && request.CheckpointDir is null)
        {
            throw new ProtocolArgumentException("--resume-from", "latest resumes from --checkpoint-dir, which is not set",
                "latest together with --checkpoint-dir DIR, or a checkpoint folder");
        }
        return request;
    }
}
