using Lowbit.Engine.Decoding;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// One LoRA/QLoRA micro-step (forward, chunked loss, backward into the adapters' gradients) captured once as a CUDA
/// graph and replayed for every later micro-batch of the same shape, so the host issues one replay instead of the
/// ~10,000 TorchSharp calls and kernel launches of an eager micro-step (at micro-batch 1 the eager step is bound by
/// them, not by the GPU). The first micro-batch of the shape runs eagerly on the capture stream (its result is used,
/// and it creates the cuBLAS workspaces and autograd threads the capture needs), then the step is recorded (recording
/// runs nothing). Inputs, targets and the loss divisor are static device tensors the host writes before each replay;
/// the adapters' gradients accumulate into the same tensors every replay (they are never set to null), and dropout
/// masks come from the CUDA generator's graph-safe Philox stream (fresh masks per replay).
/// Not used (eager instead, see <see cref="Unsupported"/>): off CUDA, without the native library, full fine-tuning,
/// and gradient checkpointing with dropout (the recompute would draw other masks than the forward). When the first
/// micro-batch packs several documents into a row, the step is captured with per-token positions and the
/// block-diagonal mask as static inputs too, and runs every later micro-batch (a plain row is one document); when it
/// does not, the step is captured with plain causal attention and packed micro-batches run eagerly. A short last
/// micro-batch runs eagerly. A capture that fails is reported once and the run continues eagerly.
/// </summary>
public sealed class TrainingGraph : IDisposable
{
    private readonly LlamaForCausalLM _model;
    private readonly Device _device;
    private readonly Action<string> _log;
    private readonly Func<IStepGraph> _newGraph;
    private IStepGraph? _graph;
    private Tensor? _input;
    private Tensor? _target;
    private Tensor? _divisor;
    private Tensor? _loss;
    private Tensor? _positions;
    private Tensor? _mask;

    public TrainingGraph(LlamaForCausalLM model, Device device, Action<string> log)
        : this(model, device, log, () => new CudaGraph())
    {
    }

    /// <summary>With another recorder than a CUDA graph (tests: one that re-runs the recorded step on replay).</summary>
    internal TrainingGraph(LlamaForCausalLM model, Device device, Action<string> log, Func<IStepGraph> newGraph)
    {
        _model = model;
        _device = device;
        _log = log;
        _newGraph = newGraph;
    }

    /// <summary>Seconds spent capturing (the eager warm-up micro-step not included).</summary>
    public double CaptureSeconds { get; private set; }

    /// <summary>Micro-steps replayed from the graph.</summary>
    public long Replays { get; private set; }

    /// <summary>Set when the capture failed; every later micro-step runs eagerly.</summary>
    public string? FailedBecause { get; private set; }

    /// <summary>Why <paramref name="request"/> on <paramref name="device"/> cannot use a captured step, or null when it can.</summary>
    public static string? Unsupported(FineTuneRequest request, Device device) => Unsupported(request) ?? UnsupportedOn(device);

    /// <summary>Why <paramref name="request"/> cannot use a captured step on any device, or null.</summary>
    public static string? Unsupported(FineTuneRequest request)
    {
        if (request.Method == FineTuneMethod.Full)
        {
            return "full fine-tuning is not captured (LoRA and QLoRA only)";
        }
        if (request.GradientCheckpointing && request.Dropout > 0)
        {
            return "gradient checkpointing with LoRA dropout: the recomputed forward inside a graph would draw other dropout masks than the forward did (use --dropout 0 or no checkpointing)";
        }
        return null;
    }

    private static string? UnsupportedOn(Device device)
    {
        if (device.type != DeviceType.CUDA)
        {
            return "CUDA graphs need a CUDA device";
        }
        if (!NativeKernels.Available)
        {
            return "the native library (liblowbit_native.so) is not loaded: " + NativeKernels.Status;
        }
        return null;
    }

    /// <summary>
    /// Runs the micro-step of <paramref name="batch"/> (loss divided by <paramref name="divisor"/>, gradients accumulated):
    /// returns the detached loss, or null when this batch does not fit the captured step (the caller runs it eagerly).
    /// </summary>
    public Tensor? TryRun(IReadOnlyList<PackedBlock> batch, double divisor)
    {
        var packed = batch.Any(b => b.IsPacked);
        // A step captured for packed rows (positions and a block-diagonal mask as static inputs) also runs plain rows:
        // one document per row is the causal mask. A step captured for plain rows (causal attention, no mask) does not
        // run packed ones.
        if (FailedBecause is not null || (_graph is not null && packed && _mask is null))
        {
            return null;
        }
        var (input, target) = FineTuner.Tensors(batch, _device);
        using var inputScope = input;
        using var targetScope = target;
        var layout = packed || _mask is not null ? FineTuner.Layout(batch, (int)input.shape[1], _device) : null;
        using var positionsScope = layout?.Positions;
        using var maskScope = layout?.Mask;
        if (_graph is null)
        {
            return CaptureWith(input, target, layout, divisor);
        }
        if (!input.shape.SequenceEqual(_input!.shape))
        {
            return null;
        }
        using (var noGrad = no_grad())
        {
            _input.copy_(input);
            _target!.copy_(target);
            if (layout is not null)
            {
                _positions!.copy_(layout.Positions);
                _mask!.copy_(layout.Mask);
            }
            using var value = divisor.ToScalar();   // held: an implicit Scalar temporary may be finalized mid-call
            _divisor!.fill_(value);
        }
        _graph.Replay();
        Replays++;
        return _loss!.alias();
    }

    /// <summary>The eager warm-up micro-step of this batch on the capture stream, then the recording.</summary>
    private Tensor CaptureWith(Tensor input, Tensor target, PackedLayout? layout, double divisor)
    {
        _input = input.clone().DetachFromDisposeScope();
        _target = target.clone().DetachFromDisposeScope();
        _positions = layout?.Positions.clone().DetachFromDisposeScope();
        _mask = layout?.Mask.clone().DetachFromDisposeScope();
        using (var value = divisor.ToScalar())
        {
            _divisor = full(Array.Empty<long>(), value, ScalarType.Float32, _device).DetachFromDisposeScope();
        }
        var graph = _newGraph();
        Tensor? warm = null;
        var watch = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            graph.Capture(() =>
            {
                warm = MicroStep();
                // The warm-up's activations went back to the caching allocator's ordinary pool; the capture allocates its
                // own (private) pool, so without this the process would hold a step's activations twice.
                CudaMemory.EmptyCache();
            }, () =>
            {
                var seeding = LoraLinear.SeedDeviceGenerator;
                LoraLinear.SeedDeviceGenerator = false;
                try
                {
                    _loss = MicroStep();
                }
                finally
                {
                    LoraLinear.SeedDeviceGenerator = seeding;
                }
            });
            CaptureSeconds = watch.Elapsed.TotalSeconds;
            _graph = graph;
            _log(FormattableString.Invariant($"CUDA graph: one micro-step of [{string.Join(", ", _input.shape)}]{(_mask is null ? "" : " with per-document positions and mask")} captured in {CaptureSeconds:F2} s; later micro-batches of that shape replay it"));
        }
        catch (Exception e) when (warm is not null)
        {
            // The warm-up (eager) finished and its gradients are in; only the recording failed.
            graph.Dispose();
            _loss?.Dispose();
            _loss = null;
            FailedBecause = e.Message;
            _log("CUDA graph capture failed, training continues eagerly: " + e.Message);
        }
        catch
        {
            graph.Dispose();
            throw;
        }
        return warm!;
    }

    /// <summary>Forward, loss over the static tensors, backward; the loss (detached) stays beyond the call.</summary>
    private Tensor MicroStep()
    {
        using var scope = NewDisposeScope();
        _loss?.Dispose();   // a real capture runs this once; a test recorder on every replay
        var layout = _mask is null ? null : new PackedLayout { Positions = _positions!, Mask = _mask };
        var loss = FineTuner.LossSum(_model, _input!, _target!, layout).div(_divisor!);
        loss.backward();
        GradientCheckpoint.Release(_model.Model);
        return loss.detach().DetachFromDisposeScope();
    }

    public void Dispose()
    {
        _graph?.Dispose();
        _loss?.Dispose();
        _input?.Dispose();
        _target?.Dispose();
        _divisor?.Dispose();
        _positions?.Dispose();
        _mask?.Dispose();
    }
}
