using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;

namespace Lowbit.Operator.Builders;

/// <summary>The Job that runs <c>lowbit-engine finetune</c> for a FineTuneJob.</summary>
public static class FineTuneJobBuilder
{
    public const string Role = Labels.Components.FineTune;
    public const string CheckpointsDirectory = "checkpoints";

    private static readonly Dictionary<string, string> FieldsByFlag = new(StringComparer.Ordinal)
    {
        ["--base-model"] = "spec.baseModel",
        ["--method"] = "spec.method",
        ["--r"] = "spec.lora.r",
        ["--alpha"] = "spec.lora.alpha",
        ["--dropout"] = "spec.lora.dropout",
        ["--target-modules"] = "spec.lora.targetModules",
        ["--dataset"] = "spec.dataset.source",
        ["--dataset-format"] = "spec.dataset.format",
        ["--epochs"] = "spec.training.epochs",
        ["--max-steps"] = "spec.training.maxSteps",
        ["--learning-rate"] = "spec.training.learningRate",
        ["--micro-batch"] = "spec.training.microBatchSize",
        ["--grad-accumulation"] = "spec.training.gradientAccumulation",
        ["--seq-length"] = "spec.training.sequenceLength",
        ["--seed"] = "spec.training.seed",
        ["--save-steps"] = "spec.training.saveSteps",
        ["--eval-split"] = "spec.training.evalSplit",
        ["--warmup-ratio"] = "spec.training.warmupRatio",
        ["--out"] = "spec.output",
    };

    /// <summary>
    /// The engine request. <paramref name="baseModel"/> is the referenced QuantizedModel (QLoRA) or null for a source;
    /// Every Job's pods pass <c>--resume-from latest</c> with the checkpoint folder on the output volume: a pod the Job
    /// controller replaces (preemption, node loss, a counted failure) or a Job created again (a new placement) continues
    /// from the newest checkpoint of the same run, and a changed spec (another run) starts at step 0.
    /// On a placement of several GPUs the pod passes <c>--shards</c> = its GPUs: the engine splits the layers over them as
    /// a pipeline, as the planner sized it. The shard count is not part of the run, so a Job created again on another
    /// placement (an OOM moving to more GPUs) still resumes the same checkpoints.
    /// </summary>
    public static FineTuneRequest Request(FineTuneJob job, QuantizedModel? baseModel, WorkloadPlacement placement, VolumeSet volumes)
    {
        ArgumentNullException.ThrowIfNull(job);
        ArgumentNullException.ThrowIfNull(placement);
        ArgumentNullException.ThrowIfNull(volumes);
        var spec = job.Spec;
        var (model, revision) = spec.BaseModel.Source is { } source
            ? volumes.Model(source)
            : baseModel is not null
                ? (volumes.Artifact(baseModel, ExportFormat.Lowbit), null)
                : throw new ArgumentException("spec.baseModel: the referenced QuantizedModel is not available (Check first)", nameof(baseModel));
        var lora = spec.Lora ?? new LoraSpec();
        var output = volumes.Pvc(spec.Output.Pvc.ClaimName, spec.Output.Pvc.Path, writable: true);
        return new FineTuneRequest
        {
            BaseModel = model,
            Revision = revision,
            Method = spec.Method,
            R = lora.R,
            Alpha = lora.Alpha,
            Dropout = lora.Dropout,
            TargetModules = lora.TargetModules,
            Dataset = volumes.Data(spec.Dataset.Source),
            DatasetFormat = spec.Dataset.Format,
            Epochs = spec.Training.Epochs,
            MaxSteps = spec.Training.MaxSteps,
            LearningRate = spec.Training.LearningRate,
            MicroBatch = spec.Training.MicroBatchSize,
            GradAccumulation = spec.Training.GradientAccumulation,
            SeqLength = spec.Training.SequenceLength,
            CheckpointDir = $"{output}/{CheckpointsDirectory}",
            ResumeFrom = FineTuneRequest.ResumeLatest,
            Seed = spec.Training.Seed,
            SaveSteps = spec.Training.SaveSteps,
            EvalSplit = spec.Training.EvalSplit,
            WarmupRatio = spec.Training.WarmupRatio,
            GradientCheckpointing = spec.Training.GradientCheckpointing,
            Out = output,
            Device = placement.OnGpu ? ComputeDevice.Cuda : ComputeDevice.Cpu,
            Shards = placement.OnGpu ? Math.Max(placement.GpusPerReplica, 1) : 1,
        };
    }

    /// <summary>Why this spec cannot become a finetune Job (naming the field), or null.</summary>
    public static SpecError? Check(FineTuneJob job, QuantizedModel? baseModel, WorkloadPlacement placement)
    {
        ArgumentNullException.ThrowIfNull(job);
        return job.Spec.BaseModel.Source is null && baseModel is null
            ? new SpecError("spec.baseModel", "the referenced QuantizedModel is not available")
            : baseModel is not null && !baseModel.Spec.Formats.Contains(ExportFormat.Lowbit)
                ? new SpecError("spec.baseModel.quantizedModelRef",
                    $"QuantizedModel {baseModel.Metadata.Name} exports no lowbit format, which fine-tuning reads: add lowbit to its spec.formats")
            : EngineJobs.CheckArgs(Request(job, baseModel, placement, new VolumeSet()).ToArgs(), FieldsByFlag);
    }

    /// <summary>The Job for a spec <see cref="Check"/> accepted.</summary>
    public static V1Job Build(FineTuneJob job, QuantizedModel? baseModel, WorkloadPlacement placement, WorkloadOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (Check(job, baseModel, placement) is { } error)
        {
            throw new ArgumentException($"check the spec before building: {error}", nameof(job));
        }

        var volumes = new VolumeSet();
        var args = Request(job, baseModel, placement, volumes).ToArgs();
        var pod = PodTemplates.PodSpec(placement, volumes, options, "Never");
        pod.Containers.Add(PodTemplates.Container(job.Spec.Image ?? options.EngineImage, args, placement, volumes, job.Spec.Resources, options));
        var deadline = JobLimits.ActiveDeadlineSeconds(job.Spec.ActiveDeadlineSeconds, placement, Work(job), options);
        return ChildMeta.WithSpecHash(EngineJobs.Job(ChildMeta.For(job, Role, Role, placement), pod, options, deadline));
    }

    /// <summary>Training tokens of the whole run (steps × micro-batch × accumulation × sequence), or null without spec.training.maxSteps.</summary>
    public static double? Work(FineTuneJob job)
    {
        ArgumentNullException.ThrowIfNull(job);
        var t = job.Spec.Training;
        return t.MaxSteps is { } steps ? (double)steps * t.MicroBatchSize * t.GradientAccumulation * t.SequenceLength : null;
    }
}
