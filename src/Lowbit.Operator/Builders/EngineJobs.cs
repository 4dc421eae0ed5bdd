using k8s.Models;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using QuantizationMethod = Lowbit.Engine.Protocol.QuantizationMethod;

namespace Lowbit.Operator.Builders;

/// <summary>The Job shape every engine verb runs in: restartPolicy Never, the pod failure policy, bounded retries.</summary>
public static class EngineJobs
{
    public static V1Job Job(V1ObjectMeta meta, V1PodSpec pod, WorkloadOptions options, long? activeDeadlineSeconds = null) => new()
    {
        ApiVersion = "batch/v1",
        Kind = "Job",
        Metadata = meta,
        Spec = new V1JobSpec
        {
            BackoffLimit = options.JobBackoffLimit,
            ActiveDeadlineSeconds = activeDeadlineSeconds,
            PodFailurePolicy = PodTemplates.FailurePolicy(),
            Template = new V1PodTemplateSpec
            {
                Metadata = new V1ObjectMeta
                    {
                        Labels = new Dictionary<string, string>(meta.Labels, StringComparer.Ordinal),
                        Annotations = ChildMeta.PodAnnotations(meta),
                    },
                Spec = pod,
            },
        },
    };

    /// <summary>
    /// Parses the arguments the way the engine will (<see cref="EngineRequest.Parse"/>): a spec the engine would
    /// reject with exit code 42 is reported now, naming the spec field, instead of failing a pod.
    /// </summary>
    public static SpecError? CheckArgs(IReadOnlyList<string> args, IReadOnlyDictionary<string, string> fieldsByFlag)
    {
        ArgumentNullException.ThrowIfNull(fieldsByFlag);
        try
        {
            EngineRequest.Parse(args);
            return null;
        }
        catch (ProtocolArgumentException ex)
        {
            // The protocol's parser throws (it is the engine's command line); here its verdict becomes a value.
            return new SpecError(fieldsByFlag.TryGetValue(ex.Argument, out var field) ? field : "spec", ex.Message);
        }
    }

    public static QuantizationMethod Method(Api.V1Alpha1.QuantizationMethod method) => method switch
    {
        Api.V1Alpha1.QuantizationMethod.Rtn => QuantizationMethod.Rtn,
        Api.V1Alpha1.QuantizationMethod.Hqq => QuantizationMethod.Hqq,
        Api.V1Alpha1.QuantizationMethod.Gptq => QuantizationMethod.Gptq,
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, "not a quantization method"),
    };

    /// <summary>The engine's <c>--format</c> spelling of an export format; gguf-f16 has no engine exporter yet.</summary>
    public static string Format(ExportFormat format) => format switch
    {
        ExportFormat.Lowbit => ExportFormats.Lowbit,
        ExportFormat.Gptq => ExportFormats.Gptq,
        ExportFormat.GgufQ80 => ExportFormats.GgufQ8,
        ExportFormat.GgufQ40 => ExportFormats.GgufQ4,
        ExportFormat.GgufQ4K => ExportFormats.GgufQ4K,
        _ => throw new ArgumentOutOfRangeException(nameof(format), format, "not an export format"),
    };
}
