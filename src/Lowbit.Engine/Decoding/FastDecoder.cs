using System.Diagnostics;
using System.Numerics;
using System.Runtime.InteropServices;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Decoding;

/// <summary>How a <see cref="FastDecoder"/> is built.</summary>
public sealed record FastDecoderOptions
{
    /// <summary>Sequences decoded together (KV cache slots).</summary>
    public required int MaxBatch { get; init; }

    /// <summary>Positions per slot (prompt plus generated tokens).</summary>
    public required int MaxLength { get; init; }

    /// <summary>Capture each (batch, length) bucket's step as a CUDA graph and replay it (CUDA with the native library only).</summary>
    public bool UseGraphs { get; init; } = true;

    /// <summary>Use the native kernels when the library is loaded and the device is CUDA.</summary>
    public bool UseNativeKernels { get; init; } = true;

    /// <summary>Dense projections may use the native GEMV (false: always cuBLAS, the <c>graph-cublas</c> benchmark mode).</summary>
    public bool UseNativeGemv { get; init; } = true;

    /// <summary>
    /// Run the fused decode step where its kernels are available (<see cref="FastDecoder.UsesDecodeFusion"/>; false: the
    /// separate kernels, the <c>graph-unfused</c> benchmark mode; <c>LOWBIT_DECODE_FUSION=0</c> does the same).
    /// </summary>
    public bool FuseDecodeStep { get; init; } = true;

    /// <summary>
    /// In the fused step, let the gate/up GEMV write SiLU(gate)·up itself where its kernel can
    /// (<see cref="Int4Prologue.RmsNormSiluMul"/>: one row, int4-v2 or -wide), so the down GEMV reads the activations as
    /// they are; false (or <c>LOWBIT_GATE_UP_EPILOGUE=0</c>): the down GEMV's SiLU·mul prologue, as before session 17.
    /// </summary>
    public bool GateUpEpilogue { get; init; } = true;

    /// <summary>
    /// With graphs, time each projection shape's candidate kernels per batch bucket once at build and use the fastest
    /// (<see cref="KernelSelector"/>); false keeps the fixed defaults (<see cref="DenseProjection.NativeGemvMaxRows"/>,
    /// the first int4 GEMV at ≤ 16 rows).
    /// </summary>
    public bool MeasureKernels { get; init; } = true;

    /// <summary>Where the measured kernel table is written, each line once per process (null: standard error).</summary>
    public TextWriter? KernelLog { get; init; }

    /// <summary>
    /// The pipeline split (<c>serve --shards</c>): contiguous layer ranges in order, each on its device. The model's
    /// embedding must already be on the first shard's device, its final norm and head on the last one's, and each
    /// layer's weights on its shard's device (<c>PipelinePlacement.Place</c>); a projection found elsewhere is moved.
    /// Null: one shard holding every layer on the decoder's device.
    /// </summary>
    public IReadOnlyList<DecoderShard>? Shards { get; init; }

    /// <summary>
    /// Tests: the decode step runs <see cref="FastDecoder.ForwardFused"/> on any device, its fused variants emulated by the
    /// separate kernels' eager torch forms in the layers this selects (the others unfused), so the fused step's
    /// bookkeeping (which norm where, the residual stream, the stage boundaries) is checked without a GPU. Null: the
    /// native fused kernels where available.
    /// </summary>
    internal Func<int, bool>? EmulatedFusion { get; init; }
}

/// <summary>One stage of a pipeline-split <see cref="FastDecoder"/>: layers <c>[FirstLayer, FirstLayer + LayerCount)</c> on <see cref="Device"/>.</summary>
public sealed record DecoderShard
{
    public required Device Device { get; init; }

    public required int FirstLayer { get; init; }

    public required int LayerCount { get; init; }
}

/// <summary>
/// The fixed-shape decode step that <c>serve</c> and <c>bench-decode</c> share: weights fused at build (QKV and
/// gate/up concatenated; 4-bit layers packed for the int4 GEMV), a static KV cache <c>[slots, max, kv_heads, d]</c> per
/// layer, and device-resident per-slot state (next input token, position, generated tokens). <see cref="Step"/>
/// advances slots <c>0..batch−1</c> by one greedy token without a host sync or an allocation outside the step's graph:
/// the step for each (batch bucket, length bucket) is captured once as a CUDA graph and replayed. Without CUDA or the
/// native library the same step runs eagerly (the CPU tests run it so).
/// <para>
/// Split as a pipeline (<see cref="FastDecoderOptions.Shards"/>), each stage holds its layers, their KV cache, its
/// cos/sin table, positions and adapter mask on its device, and has its own graphs (captured and replayed with its
/// device current: a CUDA graph records one device's work). Between stages the residual stream <c>[rows, hidden]</c>
/// is copied from the stage's static output buffer into the next stage's static input buffer, outside the graphs
/// (one device-to-device copy per boundary per step); the next stage starts with its first layer's input norm. The
/// embedding runs on the first stage, the final norm and head on the last, whose logits the step returns.
/// </para>
/// </summary>
public sealed class FastDecoder : IDisposable
{
    private readonly LlamaConfig _config;
    private readonly ScalarType _dtype;
    private readonly Device _device;
    private readonly Stage[] _stages;
    private readonly bool _multiDevice;
    private readonly DecodeKernels _kernels;
    private static readonly HashSet<string> LoggedChoices = [];
    private bool _graphs;
    private readonly Layer[] _layers;
    private readonly Func<int, bool>? _fusedLayers;
    private readonly bool _gateUpEpilogue;
    private readonly Tensor _embed;
    private readonly Tensor _finalNorm;
    private readonly Projection _lmHead;
    private readonly Tensor[] _keys;
    private readonly Tensor[] _values;
    private readonly Tensor _tokens;
    private readonly Tensor _nextTokens;
    private readonly Tensor _history;
    private readonly Tensor _logits;
    private readonly long[] _hostPositions;
    private readonly Tensor? _trace;
    private readonly List<string> _traceLabels = [];
    private readonly Dictionary<string, int> _traceMarks = [];
    private long _tracedSteps;
    private readonly Dictionary<(int Stage, int Batch, int Length, bool Serve, bool Lora), CudaGraph> _captured = [];

    /// <summary>
    /// The memory pool the decode graphs of each CUDA device share (see <see cref="Capture"/>); unset with
    /// <c>LOWBIT_GRAPH_POOL=private</c>, where every graph keeps a private pool (for comparing the two).
    /// </summary>
    private readonly Dictionary<long, GraphPool> _graphPools = [];

    private static readonly bool SharedGraphPool = Environment.GetEnvironmentVariable("LOWBIT_GRAPH_POOL") != "private";
    private readonly int _heads;
    private readonly int _kvHeads;
    private readonly int _headDim;

    private FastDecoder(LlamaForCausalLM model, FastDecoderOptions options, Device device)
    {
        _config = model.Config;
        _dtype = model.Dtype;
        _device = options.Shards is { Count: > 0 } split ? split[0].Device : device;
        MaxBatch = options.MaxBatch;
        MaxLength = options.MaxLength;
        var cuda = device.type == DeviceType.CUDA;
        var shards = options.Shards ?? [new DecoderShard { Device = device, FirstLayer = 0, LayerCount = model.Model.Layers.Count }];
        CheckShards(shards, model.Model.Layers.Count, device);
        // Any GPU other than cuda:0 (the thread's default) must be made current around its stage's graphs.
        _multiDevice = cuda && shards.Any(s => DeviceIndex(s.Device) != 0);
        var native = cuda && options.UseNativeKernels && NativeKernels.Available;
        _kernels = new DecodeKernels { Native = native, NativeGemv = native && options.UseNativeGemv, EmulateFusion = options.EmulatedFusion is not null };
        _fusedLayers = options.EmulatedFusion;
        _graphs = cuda && options.UseGraphs && NativeKernels.Available;
        var attention = Environment.GetEnvironmentVariable(NativeKernelsV2.AttentionEnv);
        NativeAttentionMaxBatch = !(cuda && native) || attention == "sdpa"
            || !NativeKernelsV2.AttentionSupports(1, _config.NumAttentionHeads, _config.NumKeyValueHeads, _config.HeadDim, 1) ? 0
            : attention == "native" ? int.MaxValue : NativeAttentionDefaultMaxBatch;
        _gateUpEpilogue = options.GateUpEpilogue && Environment.GetEnvironmentVariable(GateUpEpilogueEnv) != "0";
        UsesGreedyKernel = cuda && native && NativeKernelsV2.GreedyStepAvailable && Environment.GetEnvironmentVariable(GreedyKernelEnv) != "0";
        UsesDecodeFusion = options.EmulatedFusion is not null
            || (cuda && native && options.FuseDecodeStep && NativeKernelsV2.FusedAvailable && Environment.GetEnvironmentVariable(FusionEnv) != "0");
        _heads = _config.NumAttentionHeads;
        _kvHeads = _config.NumKeyValueHeads;
        _headDim = _config.HeadDim;
        using var noGrad = no_grad();
        var first = shards[0].Device;
        var last = shards[^1].Device;
        var layerDevice = shards.SelectMany(s => Enumerable.Repeat(s.Device, s.LayerCount)).ToArray();
        _layers = new Layer[model.Model.Layers.Count];
        for (var i = 0; i < _layers.Length; i++)
        {
            _layers[i] = new Layer(model.Model.Layers[i], _dtype, layerDevice[i]);
            if (cuda)
            {
                // The layer's pre-fusion q/k/v and gate/up storage is free now, but the caching allocator keeps it and
                // cannot reuse it for the (larger) fused blocks of the next layers: give it back per layer, so the load
                // never reserves every layer's old storage at once (+0.67 × the weights at its peak before).
                CudaMemory.EmptyCache();
            }
        }
        _embed = model.Model.EmbedTokens.weight!.detach();
        _finalNorm = FinalNorm(model).detach();
        _lmHead = model.LmHead is { } head ? Projection.Fuse([head], _dtype).MoveTo(last)
            : new DenseProjection(SameDevice(_embed.device, last) ? _embed.alias() : _embed.to(last), null);
        if (!SameDevice(_embed.device, first) || !SameDevice(_finalNorm.device, last))
        {
            throw new ArgumentException($"the embedding must be on {first} (is on {_embed.device}) and the final norm on {last} (is on {_finalNorm.device})", nameof(options));
        }
        _stages = shards.Select((s, i) => new Stage
        {
            Index = i,
            Device = s.Device,
            First = s.FirstLayer,
            End = s.FirstLayer + s.LayerCount,
            IsLast = i == shards.Count - 1,
        }).ToArray();
        if (cuda)
        {
            // The pre-fusion q/k/v and gate/up storage is free now, but the caching allocator keeps it reserved, and the
            // KV slab's per-layer tensors do not fit those blocks: return them before allocating the slab, so the
            // process never holds the weights twice (no-op without liblowbit_memory.so; docs/planner.md).
            foreach (var stage in DistinctDeviceStages())
            {
                UseDevice(stage);
                CudaMemory.EmptyCache();
            }
            UseDevice(_stages[0]);
        }
        var rotary = new RotaryEmbedding(_config);
        var hidden = _config.HiddenSize;
        foreach (var stage in _stages)
        {
            (stage.Cos, stage.Sin) = rotary.CosSin(0, MaxLength, _dtype, stage.Device);
            stage.Positions = zeros([MaxBatch], ScalarType.Int64, stage.Device);
            stage.Input = stage.Index > 0 ? zeros([MaxBatch, hidden], _dtype, stage.Device) : null;
            stage.Output = stage.IsLast ? null : zeros([MaxBatch, hidden], _dtype, stage.Device);
            stage.Arrivals = UsesNativeAttention ? zeros([MaxBatch * _config.NumKeyValueHeads], ScalarType.Int32, stage.Device) : null;
        }
        _keys = new Tensor[_layers.Length];
        _values = new Tensor[_layers.Length];
        for (var i = 0; i < _layers.Length; i++)
        {
            _keys[i] = zeros([MaxBatch, MaxLength, _kvHeads, _headDim], _dtype, layerDevice[i]);
            _values[i] = zeros([MaxBatch, MaxLength, _kvHeads, _headDim], _dtype, layerDevice[i]);
        }
        _tokens = zeros([MaxBatch], ScalarType.Int64, first);
        // The last stage's argmax (bench-decode's greedy step): the next inputs themselves with one stage, else a buffer
        // on the last device copied to the first stage's inputs after the step.
        _nextTokens = _stages.Length == 1 ? _tokens : zeros([MaxBatch], ScalarType.Int64, last);
        _history = zeros([MaxBatch, MaxLength], ScalarType.Int64, last);
        _logits = zeros([MaxBatch, _config.VocabSize], _dtype, last);
        _hostPositions = new long[MaxBatch];
        _trace = cuda && _stages.Length == 1 && Environment.GetEnvironmentVariable(StepTraceEnv) == "1" && NativeKernelsV2.StepMarkAvailable
            ? zeros([2 + MaxTraceLabels], ScalarType.Int64, first) : null;
        _kernels = SelectKernels(options);
    }

    private static void CheckShards(IReadOnlyList<DecoderShard> shards, int layers, Device device)
    {
        var next = 0;
        foreach (var shard in shards)
        {
            if (shard.FirstLayer != next || shard.LayerCount < 1 || shard.Device.type != device.type)
            {
                throw new ArgumentException($"shards must cover layers 0..{layers - 1} in order, at least one each, on {device.type} devices", nameof(shards));
            }
            next += shard.LayerCount;
        }
        if (next != layers)
        {
            throw new ArgumentException($"shards cover {next} of {layers} layers", nameof(shards));
        }
    }

    private static int DeviceIndex(Device device) => device.type == DeviceType.CUDA ? Math.Max(0, (int)device.index) : -1;

    /// <summary>Same device type and index (<c>cuda</c> is <c>cuda:0</c>).</summary>
    internal static bool SameDevice(Device a, Device b) => a.type == b.type && DeviceIndex(a) == DeviceIndex(b);

    private IEnumerable<Stage> DistinctDeviceStages() => _stages.DistinctBy(s => DeviceIndex(s.Device));

    /// <summary>
    /// Makes the stage's GPU current (graphs are captured and replayed on the current device; libtorch's own ops and the
    /// native kernels follow their tensors' device anyway). Only when a stage sits on a GPU other than cuda:0.
    /// </summary>
    private void UseDevice(Stage stage)
    {
        if (_multiDevice && NativeKernels.Available)
        {
            NativeKernels.SetDevice(DeviceIndex(stage.Device));
        }
    }

    /// <summary>The stages: each one's layer range and device (one stage when not split).</summary>
    public IReadOnlyList<DecoderShard> Shards => _stages.Select(s => new DecoderShard { Device = s.Device, FirstLayer = s.First, LayerCount = s.End - s.First }).ToArray();

    /// <summary>The kernel measured fastest per projection shape and rows bucket (empty when nothing was measured).</summary>
    public IReadOnlyList<KernelChoice> KernelChoices => _kernels.Table?.Choices.ToList() ?? [];

    /// <summary>Seconds spent measuring kernels at build.</summary>
    public double KernelSelectionSeconds { get; private set; }

    /// <summary>
    /// Measures the candidate kernels of each distinct projection shape at each batch bucket up to 32 rows (graphs only:
    /// the timings are of captured calls, as the decode step runs them) and returns the kernels with that table.
    /// </summary>
    private DecodeKernels SelectKernels(FastDecoderOptions options)
    {
        if (!_graphs || !_kernels.Native || !options.MeasureKernels)
        {
            return _kernels;
        }
        var watch = Stopwatch.StartNew();
        var buckets = Enumerable.Range(0, 5).Select(i => 1 << i).Where(b => b < MaxBatch).Append(MaxBatch).Where(b => b <= 32).ToList();
        // Measured on the first stage's GPU (the pod's GPUs are alike); a head on another GPU keeps the fixed defaults.
        UseDevice(_stages[0]);
        // Every layer of that stage: a timing cycles through a shape's copies, so each weight is read cold (KernelSelector.Measure).
        var first = _stages[0];
        var projections = _layers.Skip(first.First).Take(first.End - first.First).SelectMany(l => new[] { l.Qkv, l.O, l.GateUp, l.Down });
        if (_stages.Length == 1 || SameDevice(_stages[^1].Device, _device))
        {
            projections = projections.Append(_lmHead);
        }
        IKernelTimer timer = new GraphKernelTimer(TimeProvider.System) { Calls = 1, Replays = 4 };
        var table = KernelSelector.Measure(projections, buckets, _kernels, timer, _dtype, _device);
        // The trials' inputs, references and outputs go back to the driver (each timing graph's pool already did).
        CudaMemory.EmptyCache();
        KernelSelectionSeconds = watch.Elapsed.TotalSeconds;
        var log = options.KernelLog ?? Console.Error;
        lock (LoggedChoices)
        {
            foreach (var choice in table.Choices.Where(c => LoggedChoices.Add($"{c.Shape} {c.Rows} {c.Chosen}")))
            {
                log.WriteLine($"lowbit-engine: kernel selection: {choice.Describe()}");
            }
        }
        return _kernels with { Table = table };
    }

    public int MaxBatch { get; }

    public int MaxLength { get; }

    /// <summary>True when steps replay CUDA graphs.</summary>
    public bool UsesGraphs => _graphs;

    /// <summary>True when the native kernels run (fused norm/RoPE/SiLU, int4 GEMV).</summary>
    public bool UsesNativeKernels => _kernels.Native;

    /// <summary>
    /// The largest batch whose decode step runs the native decode attention (<see cref="NativeKernelsV2.DecodeAttention"/>,
    /// fused with RoPE and the KV write in the fused step) instead of SDPA; 0 when none does. By default
    /// <see cref="NativeAttentionDefaultMaxBatch"/>; <c>LOWBIT_DECODE_ATTENTION=native</c> every batch, <c>sdpa</c> none;
    /// only on CUDA with the v2 library and for the shapes it takes. Prefill attention stays SDPA.
    /// </summary>
    public int NativeAttentionMaxBatch { get; }

    /// <summary>
    /// Native decode attention up to this batch by default: measured faster than SDPA at 1 and 8 rows (H100 run 32:
    /// int4 batch 1 407.6 against 399.6 tokens/s, batch 8 1,092.6 against 1,017.3) and, since its rows are held packed,
    /// at 16 (run 44: int4 2,304.0 against 2,270.9; run 42: 2,371.6 against 2,369.4), where identical prompts in one batch
    /// also stay identical with it (with SDPA row 1 left row 0 at tokens 4-35 in runs 41-44). At 32 SDPA stays: bf16
    /// 4,029.1 against native 3,988.4 (run 44), 3,997.1 against 3,994.3 (run 42).
    /// </summary>
    public const int NativeAttentionDefaultMaxBatch = 16;

    /// <summary>True when some batch runs the native decode attention (<see cref="NativeAttentionMaxBatch"/>).</summary>
    public bool UsesNativeAttention => NativeAttentionMaxBatch > 0;

    /// <summary>True when a decode step of <paramref name="batch"/> rows runs the native decode attention.</summary>
    public bool NativeAttentionFor(int batch) => batch <= NativeAttentionMaxBatch;

    /// <summary>
    /// Set to <c>1</c> to trace the decode step (a diagnostic; CUDA, one stage, the v2 library): a mark after each part of
    /// the step (step start, each layer's q/k/v, attention, output, gate/up and down projections, the head, sampling)
    /// and after each prefill ("prefill, host": a prefill and the host work before it, not a step's part)
    /// adds the time since the previous mark to that part's sum, read with <see cref="StepTrace"/>. Each mark is one
    /// more launch, so a traced step is slower than an untraced one.
    /// </summary>
    public const string StepTraceEnv = "LOWBIT_STEP_TRACE";

    private const int MaxTraceLabels = 32;

    /// <summary>True when the decode step is traced (<see cref="StepTraceEnv"/>).</summary>
    public bool TracesSteps => _trace is not null;

    /// <summary>One part of the traced decode step: microseconds per step summed over its marks (one per layer for a layer's parts).</summary>
    public sealed record StepTraceSegment(string Label, double MicrosecondsPerStep, int MarksPerStep);

    /// <summary>The traced parts of the decode step averaged over the steps since <see cref="ResetStepTrace"/>, in step order (empty untraced).</summary>
    public IReadOnlyList<StepTraceSegment> StepTrace()
    {
        if (_trace is null || _tracedSteps == 0)
        {
            return [];
        }
        Synchronize();
        using var host = _trace.cpu();
        var sums = host.data<long>().ToArray();
        return _traceLabels.Select((label, i) => new StepTraceSegment(label, sums[1 + i] / 1000.0 / _tracedSteps, _traceMarks.GetValueOrDefault(label))).ToList();
    }

    /// <summary>Starts the step trace's sums again (after a warm-up, say).</summary>
    public void ResetStepTrace()
    {
        if (_trace is null)
        {
            return;
        }
        Synchronize();
        using var noGrad = no_grad();
        _trace.zero_();
        _tracedSteps = 0;
    }

    /// <summary>A trace mark after the work queued so far (<see cref="StepTraceEnv"/>; nothing when untraced).</summary>
    private void Mark(string label)
    {
        if (_trace is null)
        {
            return;
        }
        var index = _traceLabels.IndexOf(label);
        if (index < 0)
        {
            if (_traceLabels.Count == MaxTraceLabels)
            {
                throw new InvalidOperationException($"step trace: more than {MaxTraceLabels} labels");
            }
            index = _traceLabels.Count;
            _traceLabels.Add(label);
        }
        _traceMarks[label] = _traceMarks.GetValueOrDefault(label) + 1;
        NativeKernelsV2.StepMark(_trace, index);
    }

    /// <summary>
    /// Set to <c>0</c> to run the decode step's RMSNorm, SiLU·mul, residual adds, RoPE and KV-cache writes as separate
    /// kernels even where the fused ones are available (<see cref="ForwardFused"/>; for measuring what they buy).
    /// </summary>
    public const string FusionEnv = "LOWBIT_DECODE_FUSION";

    /// <summary>
    /// Without the gate/up epilogue, SiLU·mul runs in the down GEMV's prologue up to this many rows and as its own kernel
    /// above (the fused decode step, <see cref="ForwardFused"/>).
    /// </summary>
    public const int SiluInDownMaxRows = 1;

    /// <summary>Set to <c>0</c> to keep SiLU·mul in the down GEMV's prologue (<see cref="FastDecoderOptions.GateUpEpilogue"/>).</summary>
    public const string GateUpEpilogueEnv = "LOWBIT_GATE_UP_EPILOGUE";

    /// <summary>
    /// Set to <c>0</c> to sample with torch's argmax, <c>index_copy_</c>, <c>copy_</c> and <c>add_</c> instead of the one
    /// greedy-step kernel (<see cref="NativeKernelsV2.GreedyStep"/>; for measuring what it buys).
    /// </summary>
    public const string GreedyKernelEnv = "LOWBIT_GREEDY_KERNEL";

    /// <summary>True when the decode step samples with the native greedy-step kernel (CUDA, the native kernels, the v2 library).</summary>
    public bool UsesGreedyKernel { get; }

    /// <summary>
    /// Set to <c>0</c> to run the final RMSNorm as its own kernel before an int4 head (<see cref="HeadNormFuses"/>; for
    /// measuring what the fusion buys).
    /// </summary>
    public const string HeadNormEnv = "LOWBIT_HEAD_NORM";

    private static readonly bool HeadNormFusion = Environment.GetEnvironmentVariable(HeadNormEnv) != "0";

    /// <summary>
    /// Whether the fused decode step of <paramref name="rows"/> rows runs the final RMSNorm in the head's GEMV prologue
    /// (the q/k/v projection's fusion, <see cref="Int4Prologue.RmsNorm"/>): an int4 head (a checkpoint that quantized
    /// lm_head) whose kernel for these rows has the variant; the logits are written straight into the step's logits
    /// buffer. A dense head keeps the separate norm (its GEMV has no prologue).
    /// </summary>
    private bool HeadNormFuses(Stage stage, long rows, bool lora) =>
        HeadNormFusion && stage.IsLast && UsesDecodeFusion && !lora
        && _lmHead.FusedVariant(rows, _dtype, _kernels, Int4Prologue.RmsNorm, residual: false) != 0;

    /// <summary>
    /// True when the decode step (without LoRA) runs <see cref="ForwardFused"/>: CUDA, the native kernels, and the v2
    /// library's fused variants loaded, unless <see cref="FusionEnv"/> is <c>0</c>.
    /// </summary>
    public bool UsesDecodeFusion { get; }

    /// <summary>Why <see cref="CaptureServeGraphs"/> turned the graphs off (the capture failed), or null.</summary>
    public string? GraphFailure { get; private set; }

    /// <summary>Seconds spent capturing graphs so far.</summary>
    public double CaptureSeconds { get; private set; }

    /// <summary>Graphs captured so far.</summary>
    public int CapturedGraphs => _captured.Count;

    /// <summary>The LoRA adapters applied per row by <see cref="StepLogits"/> and <see cref="PrefillLogits"/> (null: none).</summary>
    public IFusedAdapters? Adapters { get; set; }

    /// <summary>Bytes held by the static KV cache.</summary>
    public long CacheBytes => _keys.Concat(_values).Sum(t => t.NumberOfElements * t.ElementSize);

    /// <summary>The modules fused into each <see cref="FusedGroup"/> (checkpoint names under a decoder layer).</summary>
    public static IReadOnlyList<string> ModulesOf(FusedGroup group) => group switch
    {
        FusedGroup.Qkv => ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"],
        FusedGroup.O => ["self_attn.o_proj"],
        FusedGroup.GateUp => ["mlp.gate_proj", "mlp.up_proj"],
        FusedGroup.Down => ["mlp.down_proj"],
        _ => throw new ArgumentOutOfRangeException(nameof(group)),
    };

    /// <summary>Logits <c>[MaxBatch, vocab]</c> of the last prefill (its slot's row) or step (rows 0..batch−1).</summary>
    public Tensor Logits => _logits;

    /// <summary>Builds the decoder over <paramref name="model"/>'s weights (the model must outlive it).</summary>
    public static FastDecoder Create(LlamaForCausalLM model, FastDecoderOptions options, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxLength, 2);
        return new FastDecoder(model, options, device);
    }

    /// <summary>
    /// Runs <paramref name="prompt"/> through slot <paramref name="slot"/> from position 0 and returns the greedy next
    /// token, which becomes the slot's next input (one host sync).
    /// </summary>
    public int Prefill(int slot, IReadOnlyList<int> prompt)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(slot);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(slot, MaxBatch);
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var next = PrefillSlots(slot, [prompt]);
        return (int)next[0].item<long>();
    }

    /// <summary>
    /// Runs <paramref name="prompts"/> through slots <c>0..n−1</c> from position 0 (prompt b in slot b), as few forward
    /// passes as the serve path's batched-token limit allows (<see cref="PrefillTokensPerForward"/>: 16 prompts of 128
    /// tokens per pass on CUDA), and makes each slot's greedy next token its next input. No host sync. One prompt per
    /// pass reads all the weights for as few as 128 tokens: 32 such prefills of a 7B read 430 GB, where two passes of
    /// 2,048 tokens read 27 GB and are bound by compute.
    /// </summary>
    public void Prefill(IReadOnlyList<IReadOnlyList<int>> prompts)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prompts.Count, MaxBatch);
        using var noGrad = no_grad();
        var first = 0;
        while (first < prompts.Count)
        {
            var count = 1;
            var tokens = prompts[first].Count;
            while (first + count < prompts.Count && tokens + prompts[first + count].Count <= PrefillTokensPerForward)
            {
                tokens += prompts[first + count++].Count;
            }
            using var scope = NewDisposeScope();
            PrefillSlots(first, prompts.Skip(first).Take(count).ToList());
            first += count;
        }
    }

    /// <summary>
    /// The most prompt tokens <see cref="Prefill(IReadOnlyList{IReadOnlyList{int}})"/> puts in one forward pass: the serve
    /// path's limit (<see cref="ServeRequest.CudaMaxNumBatchedTokens"/>, <see cref="ServeRequest.CpuMaxNumBatchedTokens"/>),
    /// which the planner's memory estimate assumes. A longer prompt gets a pass of its own.
    /// </summary>
    public int PrefillTokensPerForward => _device.type == DeviceType.CUDA ? ServeRequest.CudaMaxNumBatchedTokens : ServeRequest.CpuMaxNumBatchedTokens;

    /// <summary>
    /// One forward pass over prompts in slots <paramref name="slot"/>, <paramref name="slot"/> + 1, ...: their logits,
    /// greedy next tokens (returned, on the device), positions and history.
    /// </summary>
    private Tensor PrefillSlots(int slot, IReadOnlyList<IReadOnlyList<int>> prompts)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThan(slot + prompts.Count, MaxBatch);
        var chunks = new List<PrefillChunk>();
        for (var i = 0; i < prompts.Count; i++)
        {
            if (prompts[i].Count == 0 || prompts[i].Count >= MaxLength)
            {
                throw new ArgumentException($"prompt {slot + i} of {prompts[i].Count} tokens; 1..{MaxLength - 1} fit", nameof(prompts));
            }
            chunks.Add(new PrefillChunk { Slot = slot + i, Tokens = prompts[i], Start = 0 });
        }
        var logits = PrefillLogits(chunks);
        _logits.narrow(0, slot, prompts.Count).copy_(logits);
        var next = logits.argmax(1);
        _tokens.narrow(0, slot, prompts.Count).copy_(next);
        var lengths = tensor(prompts.Select(p => (long)p.Count).ToArray(), device: _device);
        foreach (var stage in _stages)
        {
            stage.Positions.narrow(0, slot, prompts.Count).copy_(lengths);
        }
        // Row b's next token goes to its history at its own length: one scatter for every row.
        _history.narrow(0, slot, prompts.Count).scatter_(1, lengths.to(_history.device).unsqueeze(1), next.to(_history.device).unsqueeze(1));
        for (var i = 0; i < prompts.Count; i++)
        {
            _hostPositions[slot + i] = prompts[i].Count;
        }
        // The step trace keeps prefills (and the host work around them) out of "between steps".
        Mark("prefill, host");
        return next.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// Runs several slots' prompt chunks in one forward pass (the projections and MLPs over all their tokens at once,
    /// attention per chunk over its slot's cache) and returns the logits (model dtype) of each chunk's last position, or
    /// of all its positions when <see cref="PrefillChunk.AllPositions"/>, chunk after chunk: <c>[picked rows, vocab]</c>.
    /// Each chunk's rows get its adapter's LoRA delta. Touches no per-slot decode state.
    /// </summary>
    public Tensor PrefillLogits(IReadOnlyList<PrefillChunk> chunks)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(chunks.Count, 1);
        var offsets = new int[chunks.Count];
        var total = 0;
        for (var c = 0; c < chunks.Count; c++)
        {
            var chunk = chunks[c];
            ArgumentOutOfRangeException.ThrowIfNegative(chunk.Slot);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(chunk.Slot, MaxBatch);
            if (chunk.Tokens.Count == 0 || chunk.Start < 0 || chunk.Start + chunk.Tokens.Count > MaxLength)
            {
                throw new ArgumentException($"slot {chunk.Slot}: {chunk.Tokens.Count} tokens at {chunk.Start}; positions 0..{MaxLength - 1} exist", nameof(chunks));
            }
            offsets[c] = total;
            total += chunk.Tokens.Count;
        }
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        var ids = new long[total];
        var positionIds = new long[total];
        var last = new List<long>();
        for (var c = 0; c < chunks.Count; c++)
        {
            for (var i = 0; i < chunks[c].Tokens.Count; i++)
            {
                ids[offsets[c] + i] = chunks[c].Tokens[i];
                positionIds[offsets[c] + i] = chunks[c].Start + i;
                if (chunks[c].AllPositions || i == chunks[c].Tokens.Count - 1)
                {
                    last.Add(offsets[c] + i);
                }
            }
        }
        var adapterRows = chunks.SelectMany(c => Enumerable.Repeat(c.Adapter, c.Tokens.Count)).ToArray();
        Tensor? hidden = null;
        foreach (var stage in _stages)
        {
            UseDevice(stage);
            var positions = tensor(positionIds, device: stage.Device);
            var cos = stage.Cos.index_select(0, positions);
            var sin = stage.Sin.index_select(0, positions);
            var mask = LoraMask(adapterRows, stage.Device);
            // The residual stream crosses to the next stage's device at the boundary (all prompt tokens of the forward).
            var input = stage.Index == 0 ? _embed.index_select(0, tensor(ids, device: stage.Device)) : hidden!.to(stage.Device);
            hidden = Forward(stage, input, cos, sin, PrefillAttention, stage.IsLast ? tensor(last.ToArray(), device: stage.Device) : null, mask);
        }
        UseDevice(_stages[0]);
        return _lmHead.Forward(hidden!, _kernels).MoveToOuterDisposeScope();

        Tensor PrefillAttention(int layer, Tensor k, Tensor v, Tensor q)
        {
            var attended = new Tensor[chunks.Count];
            for (var c = 0; c < chunks.Count; c++)
            {
                var (slot, start, length) = (chunks[c].Slot, chunks[c].Start, chunks[c].Tokens.Count);
                _keys[layer][slot].narrow(0, start, length).copy_(k.narrow(0, offsets[c], length).view(length, _kvHeads, _headDim));
                _values[layer][slot].narrow(0, start, length).copy_(v.narrow(0, offsets[c], length).view(length, _kvHeads, _headDim));
                // A chunk inside a prompt attends to every earlier position and causally within itself: an explicit
                // mask. Its key span is padded to a multiple of 16 (the padding is masked by the same tril) because
                // the fused memory-efficient kernel takes a mask only with 16-aligned rows; an unaligned one sends SDPA
                // to the math kernel, which materializes [heads, chunk, context] scores (+2.1 GiB at 16k, docs/planner.md).
                var span = start == 0 ? length : (int)Math.Min(MaxLength, (start + length + 15) / 16 * 16);
                var keys = Expand(_keys[layer].narrow(0, slot, 1).narrow(1, 0, span).transpose(1, 2));
                var values = Expand(_values[layer].narrow(0, slot, 1).narrow(1, 0, span).transpose(1, 2));
                var query = q.narrow(0, offsets[c], length).view(1, length, _heads, _headDim).transpose(1, 2);
                var output = start == 0
                    ? nn.functional.scaled_dot_product_attention(query, keys, values, is_casual: true)
                    : nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask: ChunkMask(length, start, span, q.device));
                attended[c] = output.transpose(1, 2).reshape(length, _heads * _headDim);
            }
            return attended.Length == 1 ? attended[0] : cat(attended, 0);
        }
    }

    /// <summary>
    /// The additive mask <c>[length, span]</c> (model dtype) of a prefill chunk of <paramref name="length"/> positions
    /// starting at <paramref name="start"/>: 0 where key j ≤ start + i, −∞ elsewhere (later chunk positions and padding).
    /// </summary>
    private Tensor ChunkMask(int length, int start, int span, Device device)
    {
        using var scope = NewDisposeScope();
        var visible = ones([length, span], ScalarType.Bool, device).tril(start);
        return zeros([length, span], _dtype, device).masked_fill_(visible.logical_not(), Scalars.Of(double.NegativeInfinity)).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The server's decode step: one token for rows <c>0..rows−1</c> (row = slot) with the given tokens, positions and
    /// adapter indices (a row without a request passes position <c>MaxLength−1</c>, the scratch row), attending to
    /// positions <c>0..attend−1</c>. Returns the logits <c>[rows, vocab]</c> (model dtype), a view of a buffer the next
    /// step overwrites. Padded to the batch bucket and replayed from that bucket's graph when graphs are on; touches no
    /// per-slot decode state (sampling is the caller's).
    /// </summary>
    public Tensor StepLogits(long[] tokens, long[] positions, int[] adapters, int attend)
    {
        var rows = tokens.Length;
        ArgumentOutOfRangeException.ThrowIfLessThan(rows, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(rows, MaxBatch);
        var bucketBatch = Math.Min(MaxBatch, (int)BitOperations.RoundUpToPowerOf2((uint)rows));
        var bucketLength = Math.Min(MaxLength, Math.Max(64, (int)BitOperations.RoundUpToPowerOf2((uint)Math.Max(1, attend))));
        var paddedTokens = new long[bucketBatch];
        var paddedPositions = new long[bucketBatch];
        Array.Fill(paddedPositions, MaxLength - 1);
        tokens.CopyTo(paddedTokens, 0);
        positions.CopyTo(paddedPositions, 0);
        using var noGrad = no_grad();
        using (var scope = NewDisposeScope())
        {
            _tokens.narrow(0, 0, bucketBatch).copy_(tensor(paddedTokens, device: _device));
            foreach (var stage in _stages)
            {
                stage.Positions.narrow(0, 0, bucketBatch).copy_(tensor(paddedPositions, device: stage.Device));
            }
        }
        var lora = Adapters is { Count: > 0 } && adapters.Take(rows).Any(a => a > 0);
        if (lora)
        {
            var padded = new int[bucketBatch];
            adapters.AsSpan(0, rows).CopyTo(padded);
            foreach (var stage in _stages)
            {
                FillLoraMask(stage, padded);
            }
        }
        RunPipeline(bucketBatch, bucketLength, serve: true, lora);
        return _logits.narrow(0, 0, rows);
    }

    /// <summary>
    /// Decodes one greedy token for slots <c>0..batch−1</c>: each slot's next input is fed at its position, and the new
    /// token becomes the next input. Queues device work only (read results with <see cref="NextTokens"/> or <see cref="Generated"/>).
    /// </summary>
    public void Step(int batch)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batch, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(batch, MaxBatch);
        var bucketBatch = Math.Min(MaxBatch, (int)BitOperations.RoundUpToPowerOf2((uint)batch));
        var longest = _hostPositions.Take(bucketBatch).Max() + 1;
        var bucketLength = Math.Min(MaxLength, Math.Max(64, (int)BitOperations.RoundUpToPowerOf2((uint)longest)));
        RunPipeline(bucketBatch, bucketLength, serve: false, lora: false);
        for (var i = 0; i < bucketBatch; i++)
        {
            _hostPositions[i] = Math.Min(MaxLength - 1, _hostPositions[i] + 1);
        }
    }

    /// <summary>
    /// Captures the server step's graph of every (batch bucket, length bucket) now, so no capture lands inside a
    /// request's latency (graphs on only; adapter graphs are captured on first use). Writes position 0 of the slots'
    /// caches, so it runs before any request. Returns the graphs captured.
    /// </summary>
    public int CaptureServeGraphs()
    {
        if (!_graphs)
        {
            return 0;
        }
        var before = _captured.Count;
        // Largest first: the graphs share one memory pool per device, and the smaller steps' temporaries fit in the
        // blocks the largest one freed.
        var batches = Buckets(MaxBatch, 1);
        var lengths = Buckets(MaxLength, 64);
        batches.Reverse();
        lengths.Reverse();
        try
        {
            foreach (var batch in batches)
            {
                foreach (var length in lengths)
                {
                    RunPipeline(batch, length, serve: true, lora: false);
                }
            }
            Synchronize();
        }
        catch (Exception e) when (e is ExternalException || (e is InvalidOperationException && e.Message.StartsWith("native ", StringComparison.Ordinal)))
        {
            // A capture the native library or libtorch refused (an op not allowed while a stream captures, a libtorch
            // that changed its graph API, no memory left for the graphs' pool): serve decodes eagerly with the same
            // kernels instead of failing to start, the graphs' memory given back; the server logs why.
            foreach (var graph in _captured.Values)
            {
                graph.Dispose();
            }
            _captured.Clear();
            _graphPools.Clear();
            _graphs = false;
            GraphFailure = e.Message;
            ClearSlots();
            return 0;
        }
        return _captured.Count - before;
    }

    /// <summary>
    /// Zeroes the KV cache and every per-slot buffer (next tokens, positions, histories, logits, host positions) in
    /// place, so the captured graphs keep reading the same memory: the decoder is then as it was right after
    /// <see cref="Create"/> (the serve warm-up's dummy tokens leave nothing behind).
    /// </summary>
    public void ClearSlots()
    {
        using var noGrad = no_grad();
        foreach (var t in _keys.Concat(_values).Concat([_tokens, _nextTokens, _history, _logits]).Concat(_stages.SelectMany(StateOf)))
        {
            t.zero_();
        }
        Array.Clear(_hostPositions);
        Synchronize();
    }

    /// <summary>Waits for every stage's GPU (nothing on the CPU).</summary>
    private void Synchronize()
    {
        if (_device.type != DeviceType.CUDA)
        {
            return;
        }
        foreach (var stage in DistinctDeviceStages())
        {
            cuda.synchronize(stage.Device);
        }
    }

    /// <summary>A stage's own static buffers (positions, boundary input and output).</summary>
    private static IEnumerable<Tensor> StateOf(Stage stage) =>
        new[] { stage.Positions, stage.Input, stage.Output }.OfType<Tensor>();

    /// <summary>The bucket sizes <c>min(limit, max(floor, 2^k))</c>, ascending.</summary>
    private static List<int> Buckets(int limit, int floor)
    {
        var sizes = new SortedSet<int>();
        for (var size = 1; ; size *= 2)
        {
            sizes.Add(Math.Min(limit, Math.Max(floor, size)));
            if (size >= limit)
            {
                break;
            }
        }
        return sizes.ToList();
    }

    /// <summary>The next input token of slots <c>0..batch−1</c> (the token the last step produced); one host sync.</summary>
    public long[] NextTokens(int batch)
    {
        using var scope = NewDisposeScope();
        return _tokens.narrow(0, 0, batch).cpu().data<long>().ToArray();
    }

    /// <summary>Tokens generated in slot <paramref name="slot"/> after its prompt of <paramref name="promptLength"/> tokens (<paramref name="count"/> of them).</summary>
    public int[] Generated(int slot, int promptLength, int count)
    {
        using var scope = NewDisposeScope();
        return _history[slot].narrow(0, promptLength, count).cpu().data<long>().ToArray().Select(t => (int)t).ToArray();
    }

    /// <summary>Host-side position of each slot (its next input's position).</summary>
    public long Position(int slot) => _hostPositions[slot];

    /// <summary>Runs one step of a (batch, length, mode) bucket: its graph when graphs are on (captured on first use), else eagerly.</summary>
    private void Run(Stage stage, int batch, int length, bool serve, bool lora)
    {
        UseDevice(stage);
        if (!_graphs)
        {
            DecodeStep(stage, batch, length, serve, lora);
            return;
        }
        var key = (stage.Index, batch, length, serve, lora);
        if (!_captured.TryGetValue(key, out var graph))
        {
            graph = Capture(stage, batch, length, serve, lora);
            _captured[key] = graph;
        }
        graph.Replay();
    }

    /// <summary>
    /// Every stage's step in order; between two stages the residual stream of the batch's rows is copied from the
    /// earlier stage's output buffer into the next one's input buffer, outside the graphs (a device-to-device copy
    /// that libtorch orders after the earlier stage's work and before the next one's).
    /// </summary>
    private void RunPipeline(int batch, int length, bool serve, bool lora)
    {
        _tracedSteps += _trace is null ? 0 : 1;
        foreach (var stage in _stages)
        {
            if (stage.Index > 0)
            {
                using var noGrad = no_grad();
                stage.Input!.narrow(0, 0, batch).copy_(_stages[stage.Index - 1].Output!.narrow(0, 0, batch));
            }
            Run(stage, batch, length, serve, lora);
        }
        if (!serve && _stages.Length > 1)
        {
            using var noGrad = no_grad();
            _tokens.narrow(0, 0, batch).copy_(_nextTokens.narrow(0, 0, batch));
        }
        UseDevice(_stages[0]);
    }

    /// <summary>
    /// The one-hot adapter mask <c>[rows, adapters]</c> (model dtype) for per-row adapter indices, or null when no row
    /// uses an adapter (the base path then runs alone).
    /// </summary>
    private Tensor? LoraMask(int[] adapters, Device device)
    {
        if (Adapters is not { Count: > 0 } set || !adapters.Any(a => a > 0))
        {
            return null;
        }
        var host = new float[adapters.Length * set.Count];
        for (var r = 0; r < adapters.Length; r++)
        {
            if (adapters[r] > 0)
            {
                host[r * set.Count + adapters[r] - 1] = 1;
            }
        }
        return tensor(host, [adapters.Length, set.Count], device: device).to(_dtype);
    }

    /// <summary>Writes the step's adapter mask into the static buffer the graphs read (reallocated, and LoRA graphs dropped, when the adapters changed).</summary>
    private void FillLoraMask(Stage stage, int[] adapters)
    {
        var set = Adapters!;
        if (stage.LoraVersion != set.Version || stage.LoraMask is null)
        {
            foreach (var key in _captured.Keys.Where(k => k.Lora && k.Stage == stage.Index).ToList())
            {
                _captured[key].Dispose();
                _captured.Remove(key);
            }
            if (_captured.Count == 0)
            {
                // The last graph of a shared pool released it: the next capture starts a new one.
                _graphPools.Clear();
            }
            stage.LoraMask?.Dispose();
            stage.LoraMask = zeros([MaxBatch, set.Count], _dtype, stage.Device).DetachFromDisposeScope();
            stage.LoraVersion = set.Version;
        }
        using var scope = NewDisposeScope();
        stage.LoraMask.narrow(0, 0, adapters.Length).copy_(LoraMask(adapters, stage.Device)!);
    }

    private CudaGraph Capture(Stage stage, int batch, int length, bool serve, bool lora)
    {
        var watch = Stopwatch.StartNew();
        using var noGrad = no_grad();
        var graph = new CudaGraph();
        // What the stage's step writes besides the KV cache: its positions and output, and on the last stage the
        // logits, histories and next tokens (the first stage's inputs when there is one stage).
        var state = StateOf(stage).Concat(stage.IsLast ? [_tokens, _nextTokens, _history, _logits] : [])
            .Where(t => SameDevice(t.device, stage.Device)).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>().ToList();
        var saved = state.Select(t => t.clone()).ToList();
        void Restore()
        {
            for (var i = 0; i < state.Count; i++)
            {
                state[i].copy_(saved[i]);
            }
        }
        try
        {
            // Every decode step writes its results into the static buffers above and frees what it allocated, and
            // steps run one at a time on one stream: the graphs of a device can share one memory pool (as vLLM's do).
            // Each keeping its own held ~40-50 MiB per graph, 1.4 GiB for the 28 graphs of 2,048 × 8 on the H200.
            var device = stage.Device.index;
            var pool = SharedGraphPool ? _graphPools.GetValueOrDefault(device) : default;
            pool = graph.Capture(() =>
            {
                DecodeStep(stage, batch, length, serve, lora);
                Restore();
            }, () => DecodeStep(stage, batch, length, serve, lora), pool);
            if (SharedGraphPool)
            {
                _graphPools[device] = pool;
            }
        }
        catch
        {
            graph.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in saved)
            {
                t.Dispose();
            }
        }
        // The warm-up's writes at the slots' positions are rewritten by the first replay before anything reads them.
        cuda.synchronize(stage.Device);
        CaptureSeconds += watch.Elapsed.TotalSeconds;
        return graph;
    }

    /// <summary>The step: every shape fixed by (batch, length), all state in preallocated device tensors.</summary>
    private void DecodeStep(Stage stage, int batch, int length, bool serve, bool lora)
    {
        using var noGrad = no_grad();
        using var scope = NewDisposeScope();
        _traceMarks.Clear();
        Mark("between steps");
        var device = stage.Device;
        var positions = stage.Positions.narrow(0, 0, batch).clamp(Scalars.Of(0), Scalars.Of(MaxLength - 1));
        var cos = stage.Cos.index_select(0, positions);
        var sin = stage.Sin.index_select(0, positions);
        // SDPA's additive mask, built once per step (a boolean one would be converted by every layer's attention; the
        // native attention needs none).
        Tensor? visible = null;
        var nativeAttention = NativeAttentionFor(batch);
        if (!nativeAttention)
        {
            var hidden0 = arange(Scalars.Of(0), Scalars.Of(length), Scalars.One, ScalarType.Int64, device).unsqueeze(0).gt(positions.unsqueeze(1)).view(batch, 1, 1, length);
            visible = zeros([batch, 1, 1, length], _dtype, device).masked_fill(hidden0, Scalars.Of(double.NegativeInfinity));
        }
        // Each row's first cache and history index, and its cache index at its position (for the separate KV writes and
        // torch's sampling): the fused step's kernels write the cache and the greedy kernel the history without them,
        // and each is a launch.
        var storesKv = !(UsesDecodeFusion && !lora) || _kernels.EmulateFusion;
        var rows = storesKv || !UsesGreedyKernel ? arange(Scalars.Of(0), Scalars.Of(batch), Scalars.One, ScalarType.Int64, device).mul(Scalars.Of(MaxLength)) : null;
        var slotsAt = storesKv ? rows!.add(positions, Scalars.One) : null;
        Tensor Rows() => rows ?? throw new InvalidOperationException("the step's row offsets were not made");
        Tensor SlotsAt() => slotsAt ?? throw new InvalidOperationException("the step's cache indices were not made");
        var input = stage.Index == 0 ? _embed.index_select(0, _tokens.narrow(0, 0, batch)) : stage.Input!.narrow(0, 0, batch);
        Mark("step start");
        void StoreKv(int layer, Tensor k, Tensor v)
        {
            _keys[layer].view(MaxBatch * MaxLength, _kvHeads * _headDim).index_copy_(0, SlotsAt(), k);
            _values[layer].view(MaxBatch * MaxLength, _kvHeads * _headDim).index_copy_(0, SlotsAt(), v);
        }
        Tensor Attend(int layer, Tensor q)
        {
            if (nativeAttention)
            {
                // Straight from the cache at each row's position: no transposed views, mask or per-kv-head query views.
                var output = empty([batch, _heads * _headDim], _dtype, device);
                NativeKernelsV2.DecodeAttention(q, _keys[layer], _values[layer], positions, stage.Arrivals!, length, output);
                return output;
            }
            // Grouped-query heads without repeating the cache: each kv head's query group is the "query length" of
            // its attention ([batch, kv_heads, group, d] against [batch, kv_heads, length, d]); the mask broadcasts.
            var keys = _keys[layer].narrow(0, 0, batch).narrow(1, 0, length).transpose(1, 2);
            var values = _values[layer].narrow(0, 0, batch).narrow(1, 0, length).transpose(1, 2);
            var query = q.view(batch, _kvHeads, _heads / _kvHeads, _headDim);
            var attended = nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask: visible);
            return attended.reshape(batch, _heads * _headDim);
        }
        var headNorms = HeadNormFuses(stage, batch, lora);
        var normalized = true;
        var hidden = UsesDecodeFusion && !lora
            ? ForwardFused(stage, input, headNorms, out normalized, (layer, qkv) =>
            {
                if (_kernels.EmulateFusion)
                {
                    var qk = Rope(qkv.narrow(1, 0, (_heads + _kvHeads) * _headDim), _heads + _kvHeads, cos, sin);
                    StoreKv(layer, qk.narrow(1, _heads * _headDim, _kvHeads * _headDim), qkv.narrow(1, (_heads + _kvHeads) * _headDim, _kvHeads * _headDim));
                    return Attend(layer, qk.narrow(1, 0, _heads * _headDim));
                }
                if (nativeAttention)
                {
                    // RoPE, the cache write and the attention in one kernel (it keeps the launch chain unbroken).
                    var attended = empty([batch, _heads * _headDim], _dtype, device);
                    NativeKernelsV2.RopeAttention(qkv, cos, sin, positions, _keys[layer], _values[layer], stage.Arrivals!, length, attended);
                    return attended;
                }
                // RoPE of q and k, and k/v into the cache at each row's position, in one kernel.
                var q = empty([batch, _heads * _headDim], _dtype, device);
                NativeKernelsV2.RopeKv(qkv, cos, sin, positions, q, _keys[layer], _values[layer]);
                return Attend(layer, q);
            })
            : Forward(stage, input, cos, sin, (layer, k, v, q) =>
            {
                StoreKv(layer, k, v);
                return Attend(layer, q);
            }, null, lora ? stage.LoraMask!.narrow(0, 0, batch) : null);
        if (!stage.IsLast)
        {
            stage.Output!.narrow(0, 0, batch).copy_(hidden);
            if (!serve)
            {
                stage.Positions.narrow(0, 0, batch).add_(Scalars.Of(1), Scalars.One);
            }
            return;
        }
        Mark("final norm");
        Tensor logits;
        if (!normalized)
        {
            // The final RMSNorm in the int4 head's prologue, the logits straight into the step's buffer.
            logits = _lmHead.RunFused(hidden, _kernels, Int4Prologue.RmsNorm, _finalNorm, _config.RmsNormEps, null, _logits.narrow(0, 0, batch))
                ?? throw new InvalidOperationException("the head's fused RMSNorm variant was available when the step was planned but refused its input");
        }
        else
        {
            logits = _lmHead.Forward(hidden, _kernels);
            _logits.narrow(0, 0, batch).copy_(logits);
        }
        Mark("head");
        if (serve)
        {
            return;
        }
        if (UsesGreedyKernel)
        {
            // argmax, the history write, the next tokens and the positions' advance in one kernel (it was seven).
            NativeKernelsV2.GreedyStep(logits, _nextTokens, _history, stage.Positions);
            Mark("sampling");
            return;
        }
        var next = logits.argmax(-1);
        var nextAt = Rows().add(positions.add(Scalars.Of(1), Scalars.One).clamp_max(Scalars.Of(MaxLength - 1)), Scalars.One);
        _history.view(-1).index_copy_(0, nextAt, next);
        _nextTokens.narrow(0, 0, batch).copy_(next);
        stage.Positions.narrow(0, 0, batch).add_(Scalars.Of(1), Scalars.One);
        Mark("sampling");
    }

    /// <summary>
    /// One stage's layers over <paramref name="input"/> <c>[rows, hidden]</c> (the embedded tokens on the first stage, the
    /// residual stream the previous stage returned on the others) with per-row cos/sin; <paramref name="attend"/> stores
    /// a layer's K/V <c>[rows, kv·d]</c> and returns attention over the cache for Q <c>[rows, heads·d]</c>. The last stage
    /// returns the final-norm hidden states (of the rows <paramref name="pick"/> only, when given); the others return the
    /// residual stream after their last layer. With <paramref name="loraMask"/> <c>[rows, adapters]</c> every fused
    /// projection adds each row's adapter delta.
    /// </summary>
    private Tensor Forward(Stage stage, Tensor input, Tensor cos, Tensor sin, Func<int, Tensor, Tensor, Tensor, Tensor> attend, Tensor? pick, Tensor? loraMask)
    {
        var qWidth = _heads * _headDim;
        var kvWidth = _kvHeads * _headDim;
        var residual = input;
        var normed = RmsNorm(residual, null, stage.End > stage.First ? _layers[stage.First].InputNorm : _finalNorm, out _);
        for (var i = stage.First; i < stage.End; i++)
        {
            // Each layer's intermediates (q/k/v, attention, o, gate/up, ...: ~21 × [rows, hidden]) are freed when the layer
            // ends; only the next layer's input (normed) and the residual stream carry over. Without it a 2,048-token
            // prefill of a 7B model held every layer's at once (~10.5 GiB; docs/planner.md, serve memory).
            var (previousNormed, previousResidual) = (normed, residual);
            using var layerScope = NewDisposeScope();
            var layer = _layers[i];
            var qkv = Adapt(layer.Qkv.Forward(normed, _kernels), normed, i, FusedGroup.Qkv, loraMask);
            var qk = Rope(qkv.narrow(1, 0, qWidth + kvWidth), _heads + _kvHeads, cos, sin);
            var k = qk.narrow(1, qWidth, kvWidth);
            var v = qkv.narrow(1, qWidth + kvWidth, kvWidth);
            var attended = attend(i, k, v, qk.narrow(1, 0, qWidth));
            var o = Adapt(layer.O.Forward(attended, _kernels), attended, i, FusedGroup.O, loraMask);
            normed = RmsNorm(o, residual, layer.PostNorm, out residual);
            var gateUp = Adapt(layer.GateUp.Forward(normed, _kernels), normed, i, FusedGroup.GateUp, loraMask);
            var activated = SiluMul(gateUp);
            var down = Adapt(layer.Down.Forward(activated, _kernels), activated, i, FusedGroup.Down, loraMask);
            if (!stage.IsLast && i + 1 == stage.End)
            {
                // The boundary: the residual stream (what the next layer's input norm would add up) goes to the next stage.
                return residual.add(down, Scalars.One).MoveToOuterDisposeScope();
            }
            var nextNorm = i + 1 < _layers.Length ? _layers[i + 1].InputNorm : _finalNorm;
            if (pick is not null && i + 1 == _layers.Length)
            {
                return RmsNorm(down.index_select(0, pick), residual.index_select(0, pick), nextNorm, out _).MoveToOuterDisposeScope();
            }
            normed = RmsNorm(down, residual, nextNorm, out residual).MoveToOuterDisposeScope();
            residual.MoveToOuterDisposeScope();
            // The previous layer's carried tensors are dead now (never the caller's input).
            if (!ReferenceEquals(previousNormed, normed) && !ReferenceEquals(previousNormed, residual))
            {
                previousNormed.Dispose();
            }
            if (!ReferenceEquals(previousResidual, input) && !ReferenceEquals(previousResidual, residual) && !ReferenceEquals(previousResidual, normed))
            {
                previousResidual.Dispose();
            }
        }
        return pick is null ? normed : normed.index_select(0, pick);
    }

    /// <summary>
    /// The decode step's layers with fewer kernels (<see cref="UsesDecodeFusion"/>): RoPE with the KV-cache write in one
    /// kernel (<paramref name="ropeAttend"/>: the fused q/k/v output in, attention out) and, in a layer whose four
    /// projections all have fused variants for these rows (the int4 GEMVs), each RMSNorm inside the projection after it
    /// (every GEMV block normalizes the residual stream it reads), SiLU·mul in the gate/up projection's epilogue where its
    /// kernel has one (<see cref="Int4Prologue.RmsNormSiluMul"/>), else inside the down projection, and each residual
    /// add inside the projection before it: 5 kernels and attention per layer instead of 11. Other layers run as in
    /// <see cref="Forward"/>. The roundings are the separate kernels', so the output is <see cref="Forward"/>'s up to fp32
    /// summation order. No LoRA (its deltas need the normalized input). On the last stage the output is normalized by
    /// the final RMSNorm unless <paramref name="headNorms"/> (the head's GEMV does it) and the last layer is fused:
    /// <paramref name="normalized"/> says which.
    /// </summary>
    private Tensor ForwardFused(Stage stage, Tensor input, bool headNorms, out bool normalized, Func<int, Tensor, Tensor> ropeAttend)
    {
        var eps = _config.RmsNormEps;
        var rows = input.shape[0];
        bool Fuses(int i) => i < stage.End && (_fusedLayers?.Invoke(i) ?? true)
            && _layers[i].Qkv.FusedVariant(rows, _dtype, _kernels, Int4Prologue.RmsNorm, residual: false) != 0
            && _layers[i].O.FusedVariant(rows, _dtype, _kernels, Int4Prologue.None, residual: true) != 0
            && _layers[i].GateUp.FusedVariant(rows, _dtype, _kernels, Int4Prologue.RmsNorm, residual: false) != 0
            && _layers[i].Down.FusedVariant(rows, _dtype, _kernels, Int4Prologue.SiluMul, residual: true) != 0;
        var residual = input;
        Tensor? normed = null;
        var fuses = Fuses(stage.First);
        for (var i = stage.First; i < stage.End; i++)
        {
            var (previousResidual, previousNormed) = (residual, normed);
            using var layerScope = NewDisposeScope();
            var layer = _layers[i];
            var nextFuses = Fuses(i + 1);
            if (fuses)
            {
                var qkv = layer.Qkv.RunFused(residual, _kernels, Int4Prologue.RmsNorm, layer.InputNorm, eps, null) ?? throw Unfused(i, "q/k/v");
                Mark("q/k/v");
                var attended = ropeAttend(i, qkv);
                Mark("attention");
                var mid = layer.O.RunFused(attended, _kernels, Int4Prologue.None, null, eps, residual) ?? throw Unfused(i, "output");
                Mark("output");
                // SiLU·mul in the gate/up GEMV's epilogue (its tiles pair gate row i with up row i) where its kernel has
                // one, the down GEMV then reading the activations as they are. Else, at one row, in the down GEMV's
                // prologue; at more rows as its own kernel before a plain down GEMV: in the prologue every block of the
                // GEMV recomputes it for every row and all of K, work that grows with the rows (not timed apart: int4
                // batch 2 went 668.9 → 725.7 tokens/s with session 18's changes together, H100 runs 36 and 39).
                var epilogue = _gateUpEpilogue && layer.GateUp.FusedVariant(rows, _dtype, _kernels, Int4Prologue.RmsNormSiluMul, residual: false) != 0
                    && layer.Down.FusedVariant(rows, _dtype, _kernels, Int4Prologue.None, residual: true) != 0;
                var separate = !epilogue && rows > SiluInDownMaxRows && layer.Down.FusedVariant(rows, _dtype, _kernels, Int4Prologue.None, residual: true) != 0;
                var gateUp = layer.GateUp.RunFused(mid, _kernels, epilogue ? Int4Prologue.RmsNormSiluMul : Int4Prologue.RmsNorm, layer.PostNorm, eps, null)
                    ?? throw Unfused(i, "gate/up");
                if (separate)
                {
                    gateUp = SiluMul(gateUp);
                }
                Mark("gate/up");
                residual = (layer.Down.RunFused(gateUp, _kernels, epilogue || separate ? Int4Prologue.None : Int4Prologue.SiluMul, null, eps, mid) ?? throw Unfused(i, "down"))
                    .MoveToOuterDisposeScope();
                Mark("down");
                normed = null;
            }
            else
            {
                var qkv = layer.Qkv.Forward(normed ?? RmsNorm(residual, null, layer.InputNorm, out _), _kernels);
                Mark("q/k/v");
                var attended = ropeAttend(i, qkv);
                Mark("attention");
                var postNormed = RmsNorm(layer.O.Forward(attended, _kernels), residual, layer.PostNorm, out var mid);
                Mark("output");
                var activated = SiluMul(layer.GateUp.Forward(postNormed, _kernels));
                Mark("gate/up");
                var down = layer.Down.Forward(activated, _kernels);
                Mark("down");
                if (nextFuses || i + 1 == stage.End && !stage.IsLast)
                {
                    // The next layer normalizes inside its projection (or the next stage does): the residual stream only.
                    residual = mid.add(down, Scalars.One).MoveToOuterDisposeScope();
                    normed = null;
                }
                else
                {
                    var nextNorm = i + 1 < _layers.Length ? _layers[i + 1].InputNorm : _finalNorm;
                    normed = RmsNorm(down, mid, nextNorm, out residual).MoveToOuterDisposeScope();
                    residual.MoveToOuterDisposeScope();
                }
            }
            fuses = nextFuses;
            if (!ReferenceEquals(previousResidual, input))
            {
                previousResidual.Dispose();
            }
            previousNormed?.Dispose();
        }
        // The last stage's output is normalized here unless the head's GEMV normalizes it (headNorms) and the last
        // layer left the residual stream alone (a fused layer: an unfused last layer's RMSNorm already took _finalNorm).
        normalized = !stage.IsLast || normed is not null || !headNorms;
        return !stage.IsLast ? residual : normed ?? (headNorms ? residual : RmsNorm(residual, null, _finalNorm, out _));
    }

    private static InvalidOperationException Unfused(int layer, string projection) =>
        new($"layer {layer}: the {projection} projection's fused variant was available when the layer was planned but refused its input (a non-contiguous activation?)");

    /// <summary>Adds each row's LoRA delta <c>((x·Aᵀ) ⊙ mask)·Bᵀ</c> to a fused projection's output (see <see cref="FusedAdapter"/>).</summary>
    private Tensor Adapt(Tensor output, Tensor input, int layer, FusedGroup group, Tensor? mask)
    {
        if (mask is null || Adapters?.Fused(layer, group) is not { } factors)
        {
            return output;
        }
        var rows = mask.shape[0];
        var perRank = mask.unsqueeze(2).expand(rows, mask.shape[1], factors.Rank).reshape(rows, mask.shape[1] * factors.Rank);
        var low = input.to(factors.A.dtype).mm(factors.A.t()).mul_(perRank);
        return output.add(low.mm(factors.B.t()).to(output.dtype), Scalars.One);
    }

    /// <summary>GQA: each kv head serves heads/kv query heads (repeat_kv), as a copy; MHA returns the view.</summary>
    private Tensor Expand(Tensor kv)
    {
        var groups = _heads / _kvHeads;
        if (groups == 1)
        {
            return kv;
        }
        long b = kv.shape[0], t = kv.shape[2];
        return kv.unsqueeze(2).expand(b, _kvHeads, groups, t, _headDim).reshape(b, _heads, t, _headDim);
    }

    /// <summary>HF RMSNorm of <c>x (+ residual)</c>; <paramref name="sum"/> is the residual stream after the add.</summary>
    private Tensor RmsNorm(Tensor x, Tensor? residual, Tensor weight, out Tensor sum)
    {
        if (_kernels.Native)
        {
            var output = empty_like(x);
            if (residual is null)
            {
                NativeKernels.RmsNorm(x.contiguous(), null, weight, _config.RmsNormEps, null, output);
                sum = x;
                return output;
            }
            sum = empty_like(x);
            NativeKernels.RmsNorm(x.contiguous(), residual.contiguous(), weight, _config.RmsNormEps, sum, output);
            return output;
        }
        sum = residual is null ? x : residual.add(x, Scalars.One);
        return EagerRmsNorm(sum, weight, _config.RmsNormEps);
    }

    /// <summary>HF RMSNorm with torch ops: <c>weight · T(h · rsqrt(mean(h²) + eps))</c>, h in fp32 (fp64 for fp64 inputs).</summary>
    internal static Tensor EagerRmsNorm(Tensor sum, Tensor weight, double eps)
    {
        var compute = sum.dtype == ScalarType.Float64 ? ScalarType.Float64 : ScalarType.Float32;
        var h = sum.to(compute);
        var variance = h.pow(Scalars.Of(2)).mean([-1], keepdim: true);
        var normalized = (h * rsqrt(variance.add(Scalars.Of(eps), Scalars.One))).to(sum.dtype);
        return weight * normalized;
    }

    /// <summary>Rotate-half RoPE of <c>[rows, heads·d]</c> with per-row cos/sin <c>[rows, d]</c>.</summary>
    private Tensor Rope(Tensor x, int heads, Tensor cos, Tensor sin)
    {
        var rows = x.shape[0];
        if (_kernels.Native)
        {
            var output = empty([rows, heads * _headDim], x.dtype, x.device);
            NativeKernels.Rope(x, heads, cos.contiguous(), sin.contiguous(), output);
            return output;
        }
        var v = x.reshape(rows, heads, _headDim);
        var half = _headDim / 2;
        var rotated = cat([-v.narrow(-1, half, half), v.narrow(-1, 0, half)], -1);
        var c = cos.unsqueeze(1);
        var s = sin.unsqueeze(1);
        return (v * c).add(rotated * s, Scalars.One).reshape(rows, heads * _headDim);
    }

    private Tensor SiluMul(Tensor gateUp)
    {
        var inter = gateUp.shape[1] / 2;
        if (_kernels.Native)
        {
            var output = empty([gateUp.shape[0], inter], gateUp.dtype, gateUp.device);
            NativeKernels.SiluMul(gateUp.contiguous(), output);
            return output;
        }
        return EagerSiluMul(gateUp);
    }

    /// <summary>SiLU(gate) · up of the fused gate/up output <c>[rows, 2·inter]</c> with torch ops.</summary>
    internal static Tensor EagerSiluMul(Tensor gateUp)
    {
        var inter = gateUp.shape[1] / 2;
        return nn.functional.silu(gateUp.narrow(1, 0, inter)) * gateUp.narrow(1, inter, inter);
    }

    private static Tensor FinalNorm(LlamaForCausalLM model) =>
        model.Model.named_parameters().First(p => p.name == "norm.weight").parameter;

    public void Dispose()
    {
        foreach (var graph in _captured.Values)
        {
            graph.Dispose();
        }
        _captured.Clear();
        foreach (var layer in _layers)
        {
            layer.Dispose();
        }
        _lmHead.Dispose();
        _trace?.Dispose();
        foreach (var t in _keys.Concat(_values).Concat([_tokens, _nextTokens, _history, _logits, _embed, _finalNorm]).Distinct(ReferenceEqualityComparer.Instance).Cast<Tensor>())
        {
            t.Dispose();
        }
        foreach (var stage in _stages)
        {
            stage.Dispose();
        }
    }

    /// <summary>One pipeline stage's device-resident state (see the class remarks).</summary>
    private sealed class Stage : IDisposable
    {
        public required int Index { get; init; }

        public required Device Device { get; init; }

        public required int First { get; init; }

        public required int End { get; init; }

        public required bool IsLast { get; init; }

        public Tensor Cos { get; set; } = null!;

        public Tensor Sin { get; set; } = null!;

        /// <summary>Each row's position, <c>[MaxBatch]</c> on the stage's device.</summary>
        public Tensor Positions { get; set; } = null!;

        /// <summary>The residual stream from the previous stage, <c>[MaxBatch, hidden]</c> (null on the first stage).</summary>
        public Tensor? Input { get; set; }

        /// <summary>The residual stream for the next stage, <c>[MaxBatch, hidden]</c> (null on the last stage).</summary>
        public Tensor? Output { get; set; }

        public Tensor? LoraMask { get; set; }

        /// <summary>The native decode attention's split counters, <c>[MaxBatch · kv_heads]</c> int32 zeros (kept zero by the kernel).</summary>
        public Tensor? Arrivals { get; set; }

        public int LoraVersion { get; set; } = -1;

        public void Dispose()
        {
            foreach (var t in new[] { Cos, Sin, Positions, Input, Output, LoraMask, Arrivals }.OfType<Tensor>())
            {
                t.Dispose();
            }
        }
    }

    private sealed class Layer : IDisposable
    {
        public Layer(LlamaDecoderLayer layer, ScalarType dtype, Device device)
        {
            var projections = layer.Projections().ToDictionary(p => p.Name, p => p.Layer);
            Projection Fuse(FusedGroup group) => Projection.Fuse(ModulesOf(group).Select(m => projections[m]).ToList(), dtype).MoveTo(device);
            Qkv = Fuse(FusedGroup.Qkv);
            O = Fuse(FusedGroup.O);
            GateUp = Fuse(FusedGroup.GateUp);
            Down = Fuse(FusedGroup.Down);
            var norms = layer.named_parameters().ToDictionary(p => p.name, p => p.parameter);
            InputNorm = OnDevice(norms["input_layernorm.weight"].detach(), device);
            PostNorm = OnDevice(norms["post_attention_layernorm.weight"].detach(), device);
        }

        private static Tensor OnDevice(Tensor t, Device device) => SameDevice(t.device, device) ? t : t.to(device);

        public Projection Qkv { get; }

        public Projection O { get; }

        public Projection GateUp { get; }

        public Projection Down { get; }

        public Tensor InputNorm { get; }

        public Tensor PostNorm { get; }

        public void Dispose()
        {
            Qkv.Dispose();
            O.Dispose();
            GateUp.Dispose();
            Down.Dispose();
            InputNorm.Dispose();
            PostNorm.Dispose();
        }
    }
}

/// <summary>Greedy generation through a <see cref="FastDecoder"/>.</summary>
public static class FastGeneration
{
    /// <summary>
    /// Decodes <paramref name="newTokens"/> greedy tokens for each prompt (one slot each, slots 0..n−1) and returns them:
    /// the prompts prefilled together (<see cref="FastDecoder.Prefill(IReadOnlyList{IReadOnlyList{int}})"/>), one host
    /// sync at the end.
    /// </summary>
    public static int[][] Generate(FastDecoder decoder, IReadOnlyList<IReadOnlyList<int>> prompts, int newTokens)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(newTokens, 1);
        decoder.Prefill(prompts);
        for (var i = 1; i < newTokens; i++)
        {
            decoder.Step(prompts.Count);
        }
        return prompts.Select((p, b) => decoder.Generated(b, p.Count, newTokens)).ToArray();
    }

    /// <summary>Streams greedy tokens for one prompt in slot 0 (a host read per token), stopping after a stop token.</summary>
    public static IEnumerable<int> Stream(FastDecoder decoder, IReadOnlyList<int> prompt, int maxNewTokens, IReadOnlyList<int> stopTokenIds)
    {
        var token = decoder.Prefill(0, prompt);
        for (var i = 0; i < maxNewTokens; i++)
        {
            if (i > 0)
            {
                decoder.Step(1);
                token = (int)decoder.NextTokens(1)[0];
            }
            yield return token;
            if (stopTokenIds.Contains(token) || decoder.Position(0) >= decoder.MaxLength - 1)
            {
                yield break;
            }
        }
    }
}
