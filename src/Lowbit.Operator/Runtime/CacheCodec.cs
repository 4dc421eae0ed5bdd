using System.Text.Json;
using k8s;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// How an informer holds a cached object serialized: compact UTF-8 JSON with KubernetesClient's own serializer
/// options, so what is decoded is exactly what a typed cache would have held (same converters, nulls omitted).
/// A byte array has no references for the GC to trace and no per-field object headers: a trimmed InferenceEndpoint is
/// a few hundred bytes of JSON against several KiB of typed objects.
/// </summary>
public static class CacheCodec
{
    private static readonly JsonSerializerOptions Options = CaptureOptions();

    public static byte[] Encode<T>(T obj) => JsonSerializer.SerializeToUtf8Bytes(obj, Options);

    public static T Decode<T>(byte[] json) =>
        JsonSerializer.Deserialize<T>(json, Options) ?? throw new JsonException($"cached {typeof(T).Name} decoded to null");

    private static JsonSerializerOptions CaptureOptions()
    {
        // KubernetesClient exposes its options only through this callback (KubeOps reads them the same way).
        JsonSerializerOptions? options = null;
        KubernetesJson.AddJsonOptions(o => options = o);
        return options ?? throw new InvalidOperationException("KubernetesJson did not hand out its serializer options");
    }
}
