namespace Lowbit.Api.V1Alpha1;

/// <summary>
/// Every CEL rule (<c>x-kubernetes-validations</c>) of the CRDs with its message. The attributes on the resource
/// types and the C# spec validators (which mirror the rules where no kube-apiserver evaluates CEL, e.g. the embedded
/// local cluster) both use these constants, so the two cannot drift apart.
/// </summary>
public static class CelRules
{
    public const int MaxNameLength = 52;
    public const string NameLength = "size(self.metadata.name) <= 52";
    public const string NameLengthMessage = "metadata.name must be at most 52 characters so that child names (<name>-<role>) stay valid";

    public const string ExactlyOneModelSource = "(has(self.huggingFace) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1";
    public const string ExactlyOneModelSourceMessage = "exactly one of huggingFace, url or pvc must be set";

    public const string ExactlyOneDataSource =
        "(has(self.huggingFace) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.configMap) ? 1 : 0) == 1";
    public const string ExactlyOneDataSourceMessage = "exactly one of huggingFace, url, pvc or configMap must be set";

    public const string NoParentPath = "!has(self.path) || !self.path.contains('..')";
    public const string NoParentPathMessage = "path must not contain '..'";

    public const string ExactlyOneModel = "has(self.quantizedModelRef) != has(self.source)";
    public const string ExactlyOneModelMessage = "exactly one of quantizedModelRef or source must be set";

    public const string ImageDigest = "self.matches('" + Patterns.DigestSuffix + "')";
    public const string ImageDigestMessage = "image must be pinned by digest (<repository>@sha256:<64 hex digits>)";

    public const string Immutable = "self == oldSelf";
    public const string SourceImmutableMessage = "source is immutable; create a new QuantizedModel instead";
    public const string BaseModelImmutableMessage = "baseModel is immutable; create a new FineTuneJob instead";

    public const string BitsXorTarget = "has(self.bits) != has(self.targetBitsPerWeight)";
    public const string BitsXorTargetMessage = "exactly one of bits or targetBitsPerWeight must be set";

    public const string GptqFormatBits = "!self.formats.exists(f, f == 'gptq') || (has(self.bits) && (self.bits == 4 || self.bits == 8))";
    public const string GptqFormatBitsMessage = "format gptq needs bits 4 or 8 (and no targetBitsPerWeight)";

    public const string GgufFormatBits = "self.formats.all(f, !f.startsWith('gguf-') || (has(self.bits) && self.bits == (f == 'gguf-q8_0' ? 8 : 4)))";
    public const string GgufFormatBitsMessage = "format gguf-q8_0 needs bits 8, gguf-q4_0 and gguf-q4_k need bits 4 (and no targetBitsPerWeight)";

    public const string QuantizeHeadNotGptq = "!has(self.quantizeHead) || !self.quantizeHead || !self.formats.exists(f, f == 'gptq')";
    public const string QuantizeHeadNotGptqMessage =
        "quantizeHead cannot be combined with format gptq (GPTQ readers expect a dense lm_head); export lowbit or gguf-*, or drop quantizeHead";

    public const string GptqNeedsCalibration = "self.method != 'gptq' || has(self.calibration)";
    public const string GptqNeedsCalibrationMessage = "method gptq needs calibration data: set spec.calibration";

    public const string QloraNeedsQuantizedBase = "self.method != 'qlora' || has(self.baseModel.quantizedModelRef)";
    public const string QloraNeedsQuantizedBaseMessage = "method qlora trains on a quantized base: set spec.baseModel.quantizedModelRef";

    public const string FullHasNoLora = "self.method != 'full' || !has(self.lora)";
    public const string FullHasNoLoraMessage = "spec.lora applies only to methods lora and qlora";

    public const string LlamacppNoAdapters = "self.runtime != 'llamacpp' || !has(self.adapters) || size(self.adapters) == 0";
    public const string LlamacppNoAdaptersMessage = "runtime llamacpp serves no LoRA adapters; use runtime lowbit or vllm";

    public const string MinNotAboveMax = "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas";
    public const string MinNotAboveMaxMessage = "minReplicas must be less than or equal to maxReplicas";
}
