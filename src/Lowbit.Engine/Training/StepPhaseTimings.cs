using System.Diagnostics;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>The parts of one optimizer step that <see cref="StepPhaseTimings"/> times.</summary>
public enum StepPhase
{
    /// <summary>Forward and backward over the step's micro-batches (loss, gradient accumulation, releases).</summary>
    ForwardBackward,

    /// <summary>Gradient clipping by the global norm.</summary>
    Clip,

    /// <summary>The AdamW update.</summary>
    OptimizerStep,

    /// <summary>Zeroing the gradients.</summary>
    ZeroGrad,

    /// <summary>Reading the step's loss on the host (the step's one host synchronisation).</summary>
    LossSync,

    /// <summary>The rest: the step's dispose scope, peak memory sampling, the progress line, checkpoint checks.</summary>
    Bookkeeping,
}

/// <summary>
/// Host milliseconds per <see cref="StepPhase"/> of each optimizer step (benchmarks: <c>bench-finetune</c>), from a
/// <see cref="Stopwatch"/> only. Without <see cref="SynchronizeDevice"/> nothing waits for the device, so on CUDA a
/// phase's time is the host's time to issue its work (and <see cref="StepPhase.LossSync"/> absorbs what the device
/// still had queued); with it, each phase ends with a CUDA synchronize, so the times are device-inclusive (and the
/// step is slower by the lost overlap).
/// </summary>
public sealed class StepPhaseTimings
{
    private readonly List<double[]> _steps = [];
    private readonly Stopwatch _watch = new();
    private double[]? _current;

    /// <summary>Synchronize the CUDA device at the end of every phase (no effect on the CPU).</summary>
    public bool SynchronizeDevice { get; init; }

    /// <summary>One row per finished step, indexed by <see cref="StepPhase"/>.</summary>
    public IReadOnlyList<IReadOnlyList<double>> Steps => _steps;

    /// <summary>Starts timing a step (its first phase starts now).</summary>
    public void BeginStep()
    {
        _current = new double[Enum.GetValues<StepPhase>().Length];
        _watch.Restart();
    }

    /// <summary>Ends <paramref name="phase"/> (adds the time since the last mark to it) and starts the next.</summary>
    public void Mark(StepPhase phase, Device device)
    {
        if (_current is null)
        {
            return;
        }
        if (SynchronizeDevice && device.type == TorchSharp.DeviceType.CUDA)
        {
            // Every GPU: a pipeline split (--shards) runs the phase's work on several.
            for (var gpu = 0; gpu < cuda.device_count(); gpu++)
            {
                cuda.synchronize(new Device(TorchSharp.DeviceType.CUDA, gpu));
            }
        }
        _current[(int)phase] += _watch.Elapsed.TotalMilliseconds;
        _watch.Restart();
    }

    /// <summary>Ends the step: the time since the last mark goes to <see cref="StepPhase.Bookkeeping"/>.</summary>
    public void EndStep()
    {
        if (_current is null)
        {
            return;
        }
        _current[(int)StepPhase.Bookkeeping] += _watch.Elapsed.TotalMilliseconds;
        _steps.Add(_current);
        _current = null;
    }
}
