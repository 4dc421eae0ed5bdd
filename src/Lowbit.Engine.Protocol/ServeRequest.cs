namespace Lowbit.Engine.Protocol;

/// <summary>
/// <c>serve --model SRC [--adapters A,B] [--port N] [--max-context N] [--max-concurrency N] [--max-num-batched-tokens N] [--served-name NAME] [--device cpu|cuda] [--api-key-file F] [--shards N] [--shard-devices D,D]</c>:
/// an OpenAI-compatible server (docs/serve.md). <c>--adapters</c> entries are PEFT folders, <c>name=path</c> or a path
/// (the folder name is the adapter's model name).
/// </summary>
public sealed record ServeRequest : EngineRequest, IShardedRequest
{
    public const int DefaultPort = 8080;

    /// <summary>
    /// <c>--max-num-batched-tokens</c> on CUDA when not given: vLLM's chunked-prefill default; a 2048-token forward of
    /// a 7B model fills the GPU and still costs only a few decode steps.
    /// </summary>
    public const int CudaMaxNumBatchedTokens = 2048;

    /// <summary>
    /// <c>--max-num-batched-tokens</c> on the CPU (and on the llama.cpp path, which is CPU-only) when not given:
    /// llama.cpp's <c>n_ubatch</c>. A CPU prefill is compute-bound, so a larger budget only stretches the inter-token
    /// latency of the streams decoding next to it.
    /// </summary>
    public const int CpuMaxNumBatchedTokens = 512;

    /// <summary>The largest <c>--max-num-batched-tokens</c> accepted: one forward over more prompt tokens than this is a typo, not a plan.</summary>
    public const int MaxBatchedTokensLimit = 1 << 20;

    private static readonly string[] Flags =
    [
        CommonFlags.Model, CommonFlags.Revision, "--adapters", "--port", "--max-context", "--max-concurrency", "--max-num-batched-tokens", "--served-name",
        CommonFlags.Device, "--api-key-file", .. ShardArguments.Flags,
    ];

    public const string ShardDevicesFlag = ShardArguments.DevicesFlag;

    public required string Model { get; init; }

    public string? Revision { get; init; }

    /// <summary>LoRA adapter folders (PEFT layout) to load alongside the model.</summary>
    public IReadOnlyList<string> Adapters { get; init => field = ValueList.Of(value); } = ValueList<string>.Empty;

    public int Port { get; init; } = DefaultPort;

    public int MaxContext { get; init; } = 4096;

    public int MaxConcurrency { get; init; } = 8;

    /// <summary>
    /// Prompt tokens prefilled per scheduler iteration over all prefilling requests (vLLM's
    /// <c>max_num_batched_tokens</c>); null: the engine's default for the device (2048 on CUDA, 512 on the CPU).
    /// </summary>
    public int? MaxNumBatchedTokens { get; init; }

    /// <summary>The model id reported by <c>/v1/models</c>; default the source's name.</summary>
    public string? ServedName { get; init; }

    public ComputeDevice? Device { get; init; }

    /// <summary>A file holding the API key; when set, <c>/v1/*</c> needs <c>Authorization: Bearer KEY</c> (401 otherwise).</summary>
    public string? ApiKeyFile { get; init; }

    /// <summary>
    /// <c>--shards</c>: the decoder layers split over this many devices as a pipeline (docs/serve.md, <i>Sharding across
    /// GPUs</i>); 1 is no split. Written on the command line only when above 1.
    /// </summary>
    public int Shards { get; init; } = 1;

    /// <summary>
    /// <c>--shard-devices</c>: the device of each shard (<c>cuda:0,cuda:0</c> stacks two shards on one GPU); empty:
    /// <see cref="ResolveShardDevices"/>'s default.
    /// </summary>
    public IReadOnlyList<string> ShardDevices { get; init => field = ValueList.Of(value); } = ValueList<string>.Empty;

    /// <summary>
    /// The device of each shard: <see cref="ShardDevices"/> when given, else <c>cuda:0</c> … <c>cuda:N-1</c> on CUDA
    /// and <c>cpu</c> for every shard on the CPU.
    /// </summary>
    public IReadOnlyList<string> ResolveShardDevices(bool cuda) => ShardArguments.Resolve(this, cuda);

    public override string Verb => EngineVerbs.Serve;

    public override IReadOnlyList<string> ToArgs() => new ArgumentWriter(Verb)
        .Add(CommonFlags.Model, Model)
        .Add(CommonFlags.Revision, Revision)
        .Add("--adapters", Adapters)
        .Add("--port", Port)
        .Add("--max-context", MaxContext)
        .Add("--max-concurrency", MaxConcurrency)
        .Add("--max-num-batched-tokens", MaxNumBatchedTokens)
        .Add("--served-name", ServedName)
        .Add(CommonFlags.Device, Device)
        .Add("--api-key-file", ApiKeyFile)
        .AddShards(this)
        .Build();

    public static new ServeRequest Parse(IReadOnlyList<string> args)
    {
        var r = new ArgumentReader(EngineVerbs.Serve, args, Flags);
        var device = r.Enum<ComputeDevice>(CommonFlags.Device);
        var (shards, shardDevices) = ShardArguments.Read(r, device);
        return new ServeRequest
        {
            Model = r.Required(CommonFlags.Model, CommonFlags.ModelAccepted),
            Revision = r.Optional(CommonFlags.Revision),
            Adapters = r.List("--adapters"),
            Port = r.Int("--port", 1, 65535) ?? DefaultPort,
            MaxContext = r.Int("--max-context", 16, 1 << 22) ?? 4096,
            MaxConcurrency = r.Int("--max-concurrency", 1, 4096) ?? 8,
            MaxNumBatchedTokens = r.Int("--max-num-batched-tokens", 1, MaxBatchedTokensLimit),
            ServedName = r.Optional("--served-name"),
            Device = device,
            ApiKeyFile = r.Optional("--api-key-file"),
            Shards = shards,
            ShardDevices = shardDevices,
        };
    }
}
