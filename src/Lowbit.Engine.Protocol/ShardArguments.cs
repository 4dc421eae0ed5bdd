namespace Lowbit.Engine.Protocol;

/// <summary>A request that may split its model over devices as a pipeline (<c>--shards</c>, <c>--shard-devices</c>).</summary>
public interface IShardedRequest
{
    /// <summary><c>--shards</c>: the number of pipeline stages; 1 is no split.</summary>
    int Shards { get; }

    /// <summary><c>--shard-devices</c>: the device of each shard; empty: <see cref="ShardArguments.Resolve"/>'s default.</summary>
    IReadOnlyList<string> ShardDevices { get; }

    /// <summary><c>--device</c>, when given.</summary>
    ComputeDevice? Device { get; }
}

/// <summary>
/// <c>--shards N [--shard-devices D,D]</c>, shared by <c>serve</c> and <c>finetune</c>: parsed and validated once, written
/// only when the model is split.
/// </summary>
public static class ShardArguments
{
    public const string DevicesFlag = "--shard-devices";

    private const string DevicesAccepted = "one device per shard, comma-separated: cpu, cuda or cuda:N (all cpu or all cuda), e.g. cuda:0,cuda:1";

    /// <summary>The two flags, for a verb's list of known flags.</summary>
    internal static IReadOnlyList<string> Flags { get; } = [PipelineSplit.ShardsFlag, DevicesFlag];

    /// <summary>
    /// The device of each shard: <paramref name="devices"/> when given, else <c>cuda:0</c> … <c>cuda:N-1</c> on CUDA and
    /// <c>cpu</c> for every shard on the CPU.
    /// </summary>
    public static IReadOnlyList<string> Resolve(IShardedRequest request, bool cuda)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.ShardDevices.Count > 0
            ? request.ShardDevices
            : Enumerable.Range(0, request.Shards).Select(i => cuda ? $"cuda:{i}" : "cpu").ToArray();
    }

    /// <summary><c>--shards</c> (omitted when 1) and <c>--shard-devices</c> (omitted when empty).</summary>
    internal static ArgumentWriter AddShards(this ArgumentWriter writer, IShardedRequest request) => writer
        .Add(PipelineSplit.ShardsFlag, request.Shards == 1 ? (int?)null : request.Shards)
        .Add(DevicesFlag, request.ShardDevices);

    /// <summary>Reads and validates both flags against each other and <c>--device</c>.</summary>
    internal static (int Shards, IReadOnlyList<string> Devices) Read(ArgumentReader reader, ComputeDevice? device)
    {
        var shards = reader.Int(PipelineSplit.ShardsFlag, 1, PipelineSplit.MaxShards) ?? 1;
        return (shards, Validate(reader.List(DevicesFlag, allowRepeats: true), shards, device));
    }

    private static IReadOnlyList<string> Validate(IReadOnlyList<string> devices, int shards, ComputeDevice? device)
    {
        if (devices.Count == 0)
        {
            return devices;
        }
        if (devices.Count != shards)
        {
            throw new ProtocolArgumentException(DevicesFlag, $"{devices.Count} devices for {shards} shards (--shards {shards})", DevicesAccepted);
        }
        if (devices.FirstOrDefault(d => !IsDeviceName(d)) is { } bad)
        {
            throw new ProtocolArgumentException(DevicesFlag, $"'{bad}' is not a device", DevicesAccepted);
        }
        var cuda = devices.Count(d => d.StartsWith("cuda", StringComparison.Ordinal));
        if (cuda != 0 && cuda != devices.Count)
        {
            throw new ProtocolArgumentException(DevicesFlag, "mixes cpu and cuda shards", DevicesAccepted);
        }
        if (device is { } d && (d == ComputeDevice.Cuda) != (cuda > 0))
        {
            throw new ProtocolArgumentException(DevicesFlag, $"devices '{string.Join(',', devices)}' with --device {ProtocolNames.Of(d)}", DevicesAccepted);
        }
        return devices;
    }

    private static bool IsDeviceName(string name) =>
        name is "cpu" or "cuda"
        || (name.StartsWith("cuda:", StringComparison.Ordinal) && name.Length > 5 && name.Length <= 8
            && name.AsSpan(5).ContainsAnyExceptInRange('0', '9') is false);
}
