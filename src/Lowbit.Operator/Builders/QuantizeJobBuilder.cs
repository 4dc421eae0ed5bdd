using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Builders;

/// <summary>The Job that runs <c>lowbit-engine quantize</c> for a QuantizedModel.</summary>
public static class QuantizeJobBuilder
{
    public const string Role = Labels.Components.Quantize;

    private static readonly Dictionary<string, string> FieldsByFlag = new(StringComparer.Ordinal)
    {
        ["--model"] = "spec.source",
        ["--method"] = "spec.method",
        ["--bits"] = "spec.bits",
        ["--target-bpw"] = "spec.targetBitsPerWeight",
        ["--group-size"] = "spec.groupSize",
        ["--format"] = "spec.formats",
        ["--out"] = "spec.output",
        ["--quantize-head"] = "spec.quantizeHead",
        ["--calibration"] = "spec.calibration",
        ["--calibration-samples"] = "spec.calibration.samples",
        ["--calibration-length"] = "spec.calibration.sequenceLength",
        ["--eval-text"] = "spec.evaluation.text",
    };

    /// <summary>The engine request the Job runs (paths are inside the pod).</summary>
    public static QuantizeRequest Request(QuantizedModel model, WorkloadPlacement placement, VolumeSet volumes)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(volumes);
        var spec = model.Spec;
        var (source, revision) = volumes.Model(spec.Source);
        return new QuantizeRequest
        {
            Model = source,
            Revision = revision,
            Method = spec.Method,
            Bits = spec.Bits,
            TargetBitsPerWeight = spec.TargetBitsPerWeight,
            GroupSize = spec.GroupSize,
            Formats = spec.Formats.Select(EngineJobs.Format).ToList(),
            Out = volumes.Pvc(spec.Output.Pvc.ClaimName, spec.Output.Pvc.Path, writable: true),
            QuantizeHead = spec.QuantizeHead,
            Calibration = spec.Calibration is { } calibration ? volumes.Data(calibration.Dataset) : null,
            CalibrationSamples = spec.Calibration?.Samples,
            CalibrationLength = spec.Calibration?.SequenceLength,
            EvalText = spec.Evaluation is { } evaluation ? volumes.Data(evaluation.Text) : null,
            Device = placement.OnGpu ? ComputeDevice.Cuda : ComputeDevice.Cpu,
        };
    }

    /// <summary>Why the engine would reject the arguments this spec makes (naming the field), or null.</summary>
    public static SpecError? Check(QuantizedModel model, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(model);
        if (model.Spec.Evaluation?.Text is { } text && (text.Url is not null || text.HuggingFace is not null))
        {
            // The engine scores a local text file; remote evaluation data would be a second download path to secure.
            return new SpecError("spec.evaluation.text", "evaluation text is read from a pvc file or a configMap key; url and huggingFace are not supported here");
        }
        return EngineJobs.CheckArgs(Request(model, placement, new VolumeSet()).ToArgs(), FieldsByFlag);
    }

    /// <summary>The Job for a spec <see cref="Check"/> accepted.</summary>
    public static V1Job Build(QuantizedModel model, WorkloadPlacement placement, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (Check(model, placement) is { } error)
        {
            throw new ArgumentException($"check the spec before building: {error}", nameof(model));
        }

        var volumes = new VolumeSet();
        var args = Request(model, placement, volumes).ToArgs();
        var image = model.Spec.Image ?? options.EngineImage;
        var pod = PodTemplates.PodSpec(placement, volumes, options, "Never");
        pod.Containers.Add(PodTemplates.Container(image, args, placement, volumes, model.Spec.Resources, options));
        var deadline = JobLimits.ActiveDeadlineSeconds(model.Spec.ActiveDeadlineSeconds, placement, Work(model), options);
        return ChildMeta.WithSpecHash(EngineJobs.Job(ChildMeta.For(model, Role, Role, placement), pod, options, deadline));
    }

    /// <summary>Tokens the quantize Job runs through the model: its calibration set (twice: Hessians, then checks) and the quality check.</summary>
    public static double Work(QuantizedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var calibration = model.Spec.Calibration is { } c ? 2.0 * c.Samples * c.SequenceLength : 0;
        return calibration + JobLimits.QualityTokens;
    }
}
