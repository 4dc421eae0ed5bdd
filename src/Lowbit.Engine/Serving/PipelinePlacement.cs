using System.Globalization;
using System.Text.RegularExpressions;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// A model's pipeline split for <c>serve --shards N</c>: the stages <see cref="PipelineSplit.Balance"/> chose, each
/// shard's device, and what it holds (weights and KV cache, in bytes on its device).
/// </summary>
public sealed record ShardPlan
{
    public required IReadOnlyList<PipelineStage> Stages { get; init; }

    public required IReadOnlyList<Device> Devices { get; init; }

    /// <summary>Weight bytes per shard on its device (its layers, plus the embedding on the first and the norm and head on the last).</summary>
    public required IReadOnlyList<long> WeightBytes { get; init; }

    /// <summary>KV cache bytes per shard (its layers' slabs).</summary>
    public required IReadOnlyList<long> CacheBytes { get; init; }

    /// <summary>The stages as the decoder takes them.</summary>
    public IReadOnlyList<DecoderShard> DecoderShards =>
        Stages.Select(s => new DecoderShard { Device = Devices[s.Shard], FirstLayer = s.FirstLayer, LayerCount = s.LayerCount }).ToArray();

    /// <summary>The device of decoder layer <paramref name="layer"/>.</summary>
    public Device LayerDevice(int layer) => Devices[Stages.First(s => layer >= s.FirstLayer && layer < s.EndLayer).Shard];

    /// <summary>
    /// The device of a projection by its module name: <c>model.layers.N.…</c> on layer N's shard, <c>lm_head</c> on the
    /// last, anything else on the first.
    /// </summary>
    public Device ProjectionDevice(string name) =>
        PipelinePlacement.LayerIndex(name) is { } layer ? LayerDevice(layer)
        : name.StartsWith("lm_head", StringComparison.Ordinal) ? Devices[^1]
        : Devices[0];

    /// <summary>
    /// One log line per shard: <c>shard 0: layers 0-15 on cuda:0 (embedding), weights 6,500 MiB, KV cache 512 MiB</c>.
    /// </summary>
    public string Describe(int shard) => Describe(shard, "KV cache");

    /// <summary>As <see cref="Describe(int)"/>, naming what <see cref="CacheBytes"/> holds (training: the trained state).</summary>
    public string Describe(int shard, string extra)
    {
        var stage = Stages[shard];
        var holds = string.Join(", ", new[] { stage.HoldsEmbedding ? "embedding" : null, stage.HoldsHead ? "final norm and head" : null }.OfType<string>());
        return string.Create(CultureInfo.InvariantCulture,
            $"shard {shard}: layers {stage.FirstLayer}-{stage.EndLayer - 1} on {PipelinePlacement.Name(Devices[shard])}{(holds.Length > 0 ? $" (+ {holds})" : "")}, weights {WeightBytes[shard] / (1 << 20):N0} MiB, {extra} {CacheBytes[shard] / (1 << 20):N0} MiB");
    }
}

/// <summary>
/// Resolves <c>--shards</c>/<c>--shard-devices</c> to devices, plans the split by bytes and moves a loaded model's
/// modules to their shards (docs/serve.md, <i>Sharding across GPUs</i>).
/// </summary>
public static partial class PipelinePlacement
{
    /// <summary>
    /// The device of every shard, or empty when the model is not split (one shard on <paramref name="device"/>).
    /// Bad combinations are <see cref="ProtocolArgumentException"/>s naming <c>--shards</c> or <c>--shard-devices</c>.
    /// </summary>
    public static IReadOnlyList<Device> ResolveDevices(IShardedRequest request, Device device, int visibleGpus)
    {
        if (request.Shards == 1 && request.ShardDevices.Count == 0)
        {
            return [];
        }
        var cuda = device.type == DeviceType.CUDA;
        if (cuda && request.ShardDevices.Count == 0 && request.Shards > visibleGpus)
        {
            throw new ProtocolArgumentException(PipelineSplit.ShardsFlag,
                $"{request.Shards} shards need {request.Shards} GPUs; this pod sees {visibleGpus}",
                $"at most {visibleGpus} shards, or pass {ShardArguments.DevicesFlag} to stack shards on one GPU (e.g. {string.Join(',', Enumerable.Repeat("cuda:0", request.Shards))})");
        }
        var devices = new List<Device>();
        foreach (var name in ShardArguments.Resolve(request, cuda))
        {
            var onCuda = name.StartsWith("cuda", StringComparison.Ordinal);
            if (onCuda != cuda)
            {
                throw new ProtocolArgumentException(ShardArguments.DevicesFlag,
                    $"'{name}' while the model runs on {(cuda ? "cuda" : "cpu")}", cuda ? "cuda:N devices (or --device cpu with cpu shards)" : "cpu for every shard (or --device cuda with cuda:N shards)");
            }
            if (!onCuda)
            {
                devices.Add(CPU);
                continue;
            }
            var index = name == "cuda" ? 0 : int.Parse(name.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture);
            if (index >= visibleGpus)
            {
                throw new ProtocolArgumentException(ShardArguments.DevicesFlag, $"'{name}' does not exist; this pod sees {visibleGpus} GPU(s)",
                    $"cuda:0 to cuda:{Math.Max(0, visibleGpus - 1)}, repeated to stack shards on one GPU");
            }
            devices.Add(new Device(DeviceType.CUDA, index));
        }
        return devices;
    }

    /// <summary>
    /// Plans the split: each layer costs its weights (from the checkpoint's tensor sizes, floating-point tensors counted
    /// in the compute dtype) plus its KV cache slab (<paramref name="slots"/> × <paramref name="positions"/>); the
    /// embedding goes on the first shard, the final norm and head on the last (a tied embedding counts on both: the
    /// last shard holds its own copy).
    /// </summary>
    public static ShardPlan Plan(string directory, LlamaConfig config, ScalarType dtype, int slots, int positions, IReadOnlyList<Device> devices)
    {
        var weights = CheckpointBytes(directory, config, dtype);
        var cache = 2L * slots * positions * config.NumKeyValueHeads * config.HeadDim * ElementSize(dtype);
        // A tied embedding counts on both ends: the last shard holds its own copy for the logits.
        return Plan(weights.Layers, Enumerable.Repeat(cache, weights.Layers.Count).ToArray(), weights.Embedding,
            weights.Head + (weights.Tied ? weights.Embedding : 0), devices);
    }

    /// <summary>
    /// Plans a split of layers costing <paramref name="layerWeights"/> plus <paramref name="layerExtra"/> (the KV cache
    /// slab when serving, the trainable state when training) each, the embedding on the first shard and the head on the last.
    /// </summary>
    public static ShardPlan Plan(IReadOnlyList<long> layerWeights, IReadOnlyList<long> layerExtra, long embedding, long head, IReadOnlyList<Device> devices)
    {
        var stages = PipelineSplit.Balance(layerWeights.Select((w, i) => w + layerExtra[i]).ToArray(), embedding, head, devices.Count);
        long Extra(PipelineStage s) => Enumerable.Range(s.FirstLayer, s.LayerCount).Sum(i => layerExtra[i]);
        return new ShardPlan
        {
            Stages = stages,
            Devices = devices,
            WeightBytes = stages.Select(s => s.Bytes - Extra(s)).ToArray(),
            CacheBytes = stages.Select(Extra).ToArray(),
        };
    }

    /// <summary>
    /// Bytes a checkpoint's tensors take on a device: per decoder layer, the embedding, and the final norm plus
    /// <c>lm_head</c> (without the embedding when tied: <c>Tied</c>). Floating-point tensors count in
    /// <paramref name="dtype"/>, quantized ones at their stored size.
    /// </summary>
    public static (IReadOnlyList<long> Layers, long Embedding, long Head, bool Tied) CheckpointBytes(string directory, LlamaConfig config, ScalarType dtype)
    {
        var layers = new long[config.NumHiddenLayers];
        long embedding = 0, head = 0;
        var elementSize = ElementSize(dtype);
        using var checkpoint = Checkpoint.Open(directory);
        foreach (var name in checkpoint.TensorNames)
        {
            var info = checkpoint.Info(name);
            var bytes = info.Dtype is SafetensorsDtype.F16 or SafetensorsDtype.BF16 or SafetensorsDtype.F32 or SafetensorsDtype.F64
                ? info.ElementCount * elementSize
                : info.ByteLength;
            if (LayerName().Match(name) is { Success: true } match)
            {
                var layer = int.Parse(match.Groups[1].ValueSpan, CultureInfo.InvariantCulture);
                if (layer < layers.Length)
                {
                    layers[layer] += bytes;
                }
            }
            else if (name.StartsWith("model.embed_tokens.", StringComparison.Ordinal))
            {
                embedding += bytes;
            }
            else if (name.StartsWith("lm_head.", StringComparison.Ordinal) || name.StartsWith("model.norm.", StringComparison.Ordinal))
            {
                head += bytes;
            }
        }
        var tied = !checkpoint.TensorNames.Any(n => n.StartsWith("lm_head.", StringComparison.Ordinal));
        return (layers, embedding, head, tied);
    }

    private static int ElementSize(ScalarType dtype) => dtype switch { ScalarType.Float32 => 4, ScalarType.Float64 => 8, _ => 2 };

    /// <summary>
    /// Loads a model for a split: every projection (dense or quantized) is read straight onto its shard's device, the
    /// embedding and norms onto the host (<see cref="Place"/> then moves them: a few hundred MB), so neither the host nor
    /// any GPU holds more than its share of the projections at any time.
    /// </summary>
    public static LlamaForCausalLM Load(string directory, ScalarType dtype, ShardPlan plan)
    {
        if (LowbitCheckpoint.IsLowbit(directory))
        {
            return LowbitCheckpoint.Load(directory, dtype, CPU, plan.ProjectionDevice);
        }
        using var checkpoint = Checkpoint.Open(directory);
        var model = new LlamaForCausalLM(checkpoint.Config, dtype, CPU, LlamaForCausalLM.MetaDevice);
        model.eval();
        model.ReplaceLinears((name, current) =>
        {
            current.Dispose();
            return new DenseLinear(current.InFeatures, current.OutFeatures, checkpoint.Contains(name + ".bias"), dtype, plan.ProjectionDevice(name));
        }, includeLmHead: true);
        ModelIo.LoadInto(model, checkpoint);
        return model;
    }

    /// <summary>
    /// Moves a model's modules to their shards: each decoder layer to its shard's device, the embedding to the first, the
    /// final norm and head to the last. Registered parameters move (dense weights, norms, embeddings; the host copy is
    /// freed); quantized layers keep their codes where <see cref="Load"/> read them (already on their shard's device).
    /// </summary>
    public static void Place(LlamaForCausalLM model, ShardPlan plan)
    {
        using var noGrad = no_grad();
        model.Model.EmbedTokens.to(plan.Devices[0]);
        for (var i = 0; i < model.Model.Layers.Count; i++)
        {
            model.Model.Layers[i].to(plan.LayerDevice(i));
        }
        model.Model.Norm.to(plan.Devices[^1]);
        model.LmHead?.to(plan.Devices[^1]);
    }

    /// <summary><c>cpu</c> or <c>cuda:N</c>.</summary>
    public static string Name(Device device) =>
        device.type == DeviceType.CUDA ? string.Create(CultureInfo.InvariantCulture, $"cuda:{Math.Max(0, (int)device.index)}") : "cpu";

    /// <summary>The decoder layer of a tensor or module name (<c>model.layers.N.…</c>), or null.</summary>
    internal static int? LayerIndex(string name) =>
        LayerName().Match(name) is { Success: true } match ? int.Parse(match.Groups[1].ValueSpan, CultureInfo.InvariantCulture) : null;

    [GeneratedRegex(@"^model\.layers\.(\d+)\.")]
    private static partial Regex LayerName();
}
