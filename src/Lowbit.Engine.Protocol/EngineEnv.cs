namespace Lowbit.Engine.Protocol;

/// <summary>Environment variables the engine reads; the operator sets them on engine pods.</summary>
public static class EngineEnv
{
    /// <summary>Bearer token for the Hugging Face hub (from the source's token Secret).</summary>
    public const string HfToken = "HF_TOKEN";

    /// <summary>Hub endpoint, default <c>https://huggingface.co</c> (a mirror or a test server otherwise).</summary>
    public const string HfEndpoint = "HF_ENDPOINT";

    /// <summary>Default device when <c>--device</c> is not given: <c>cpu</c> or <c>cuda</c>.</summary>
    public const string Device = "LOWBIT_DEVICE";

    /// <summary>Where downloaded model files are cached.</summary>
    public const string CacheDir = "LOWBIT_CACHE_DIR";

    /// <summary>Where the final JSON result goes when <c>--result-file</c> is not given.</summary>
    public const string ResultFile = "LOWBIT_RESULT_FILE";

    /// <summary>Directory holding a PyTorch install's <c>libtorch*.so</c> (the GPU bundle sets it).</summary>
    public const string TorchLib = "LOWBIT_TORCH_LIB";

    /// <summary>
    /// The pod's own address where no network namespace gives it one (the local cluster's executor sets it, e.g.
    /// 127.1.0.7): <c>serve</c> listens there instead of on every interface, so pods sharing a port do not collide.
    /// </summary>
    public const string PodIp = "LOWBIT_POD_IP";

    /// <summary>The default hub endpoint.</summary>
    public const string DefaultHfEndpoint = "https://huggingface.co";

    /// <summary>Kubernetes' termination message path: the result's default destination in a pod.</summary>
    public const string TerminationLog = "/dev/termination-log";
}
