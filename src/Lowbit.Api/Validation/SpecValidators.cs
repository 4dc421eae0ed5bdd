using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;

namespace Lowbit.Api.Validation;

/// <summary>
/// The cross-field rules of QuantizedModel (the CRD's CEL rules, in C#). The operator runs them on every
/// reconcile and reports failures as <c>Ready=False</c>/<c>Stalled=True</c> with reason <c>InvalidSpec</c>,
/// because the embedded API server does not evaluate CEL.
/// </summary>
public static class QuantizedModelSpecValidator
{
    public static IReadOnlyList<SchemaError> Validate(QuantizedModelSpec spec, string path = "spec")
    {
        ArgumentNullException.ThrowIfNull(spec);
        var errors = new List<SchemaError>();
        SpecChecks.ModelSource(spec.Source, $"{path}.source", errors);
        if (spec.Bits.HasValue == spec.TargetBitsPerWeight.HasValue)
        {
            errors.Add(SpecChecks.Invalid($"{path}.bits", CelRules.BitsXorTargetMessage));
        }

        if (spec.Formats.Contains(ExportFormat.Gptq) && spec.Bits is not (4 or 8))
        {
            errors.Add(SpecChecks.Invalid($"{path}.formats", CelRules.GptqFormatBitsMessage));
        }

        var ggufBits = spec.Formats.Select(f => f switch
        {
            ExportFormat.GgufQ80 => 8,
            ExportFormat.GgufQ40 or ExportFormat.GgufQ4K => 4,
            _ => (int?)null,
        }).OfType<int>();
        if (ggufBits.Any(bits => spec.Bits != bits))
        {
            errors.Add(SpecChecks.Invalid($"{path}.formats", CelRules.GgufFormatBitsMessage));
        }

        if (spec.QuantizeHead && spec.Formats.Contains(ExportFormat.Gptq))
        {
            errors.Add(SpecChecks.Invalid($"{path}.quantizeHead", CelRules.QuantizeHeadNotGptqMessage));
        }

        if (spec.Method == QuantizationMethod.Gptq && spec.Calibration is null)
        {
            errors.Add(SpecChecks.Required($"{path}.calibration", CelRules.GptqNeedsCalibrationMessage));
        }

        SpecChecks.DataSource(spec.Calibration?.Dataset, $"{path}.calibration.dataset", errors);
        SpecChecks.Pvc(spec.Output.Pvc, $"{path}.output.pvc", errors);
        SpecChecks.Image(spec.Image, $"{path}.image", errors);
        return errors;
    }

    /// <summary>Transition rules: what may not change after creation.</summary>
    public static IReadOnlyList<SchemaError> ValidateUpdate(QuantizedModelSpec oldSpec, QuantizedModelSpec newSpec, string path = "spec")
    {
        ArgumentNullException.ThrowIfNull(oldSpec);
        ArgumentNullException.ThrowIfNull(newSpec);
        var errors = new List<SchemaError>();
        SpecChecks.Immutable(oldSpec.Source, newSpec.Source, $"{path}.source", CelRules.SourceImmutableMessage, errors);
        return errors;
    }
}

/// <summary>The cross-field rules of FineTuneJob (the CRD's CEL rules, in C#).</summary>
public static class FineTuneJobSpecValidator
{
    public static IReadOnlyList<SchemaError> Validate(FineTuneJobSpec spec, string path = "spec")
    {
        ArgumentNullException.ThrowIfNull(spec);
        var errors = new List<SchemaError>();
        SpecChecks.ModelReference(spec.BaseModel, $"{path}.baseModel", errors);
        if (spec.Method == FineTuneMethod.Qlora && spec.BaseModel.QuantizedModelRef is null)
        {
            errors.Add(SpecChecks.Invalid($"{path}.baseModel", CelRules.QloraNeedsQuantizedBaseMessage));
        }

        if (spec.Method == FineTuneMethod.Full && spec.Lora is not null)
        {
            errors.Add(SpecChecks.Forbidden($"{path}.lora", CelRules.FullHasNoLoraMessage));
        }

        SpecChecks.DataSource(spec.Dataset.Source, $"{path}.dataset.source", errors);
        SpecChecks.Pvc(spec.Output.Pvc, $"{path}.output.pvc", errors);
        SpecChecks.Image(spec.Image, $"{path}.image", errors);
        return errors;
    }

    /// <summary>Transition rules: what may not change after creation.</summary>
    public static IReadOnlyList<SchemaError> ValidateUpdate(FineTuneJobSpec oldSpec, FineTuneJobSpec newSpec, string path = "spec")
    {
        ArgumentNullException.ThrowIfNull(oldSpec);
        ArgumentNullException.ThrowIfNull(newSpec);
        var errors = new List<SchemaError>();
        SpecChecks.Immutable(oldSpec.BaseModel, newSpec.BaseModel, $"{path}.baseModel", CelRules.BaseModelImmutableMessage, errors);
        return errors;
    }
}

/// <summary>The cross-field rules of InferenceEndpoint (the CRD's CEL rules, in C#).</summary>
public static class InferenceEndpointSpecValidator
{
    public static IReadOnlyList<SchemaError> Validate(InferenceEndpointSpec spec, string path = "spec")
    {
        ArgumentNullException.ThrowIfNull(spec);
        var errors = new List<SchemaError>();
        SpecChecks.ModelReference(spec.Model, $"{path}.model", errors);
        if (spec.Runtime == ServingRuntime.LlamaCpp && spec.Adapters is { Count: > 0 })
        {
            errors.Add(SpecChecks.Forbidden($"{path}.adapters", CelRules.LlamacppNoAdaptersMessage));
        }

        if (spec.Autoscaling is { } autoscaling && autoscaling.MinReplicas > autoscaling.MaxReplicas)
        {
            errors.Add(SpecChecks.Invalid($"{path}.autoscaling.minReplicas", CelRules.MinNotAboveMaxMessage));
        }

        SpecChecks.Image(spec.Image, $"{path}.image", errors);
        return errors;
    }
}
