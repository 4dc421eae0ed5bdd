using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Serving;
using static TorchSharp.torch;

namespace Lowbit.Engine.Training;

/// <summary>
/// <c>finetune --shards N</c>: a naive pipeline (model parallel) in one process. The decoder layers are split over the
/// shards' devices by <see cref="PipelineSplit.Balance"/> (the split <c>serve --shards</c> uses), each layer costing its
/// frozen weights at their stored format plus its trainable parameters with their gradient and AdamW moments; the
/// embedding sits on the first shard, the final norm and head on the last (a tied head stays with the embedding). The
/// hidden state moves between devices at stage boundaries, and autograd carries the gradients back.
/// </summary>
public static class TrainingShards
{
    /// <summary>Bytes per trained float32 element: the weight, its gradient and AdamW's two moments.</summary>
    public const int TrainedBytesPerElement = 16;

    /// <summary>
    /// The devices of the shards (<see cref="PipelinePlacement.ResolveDevices"/>: exit 42 naming <c>--shards</c> or
    /// <c>--shard-devices</c>), or empty when the run is not split; <c>--cuda-graph</c> with a split is rejected.
    /// </summary>
    public static IReadOnlyList<Device> ResolveDevices(FineTuneRequest request, Device device, int visibleGpus)
    {
        var devices = PipelinePlacement.ResolveDevices(request, device, visibleGpus);
        if (devices.Count > 1 && request.CudaGraph)
        {
            throw new ProtocolArgumentException("--cuda-graph", $"one graph captures one device's micro-step; this run is split over {devices.Count} shards",
                "--cuda-graph false with --shards above 1 (or --shards 1)");
        }
        return devices;
    }

    /// <summary>The split of a fine-tuning run by bytes on the devices (see the class summary).</summary>
    public static ShardPlan Plan(string directory, LlamaConfig config, ScalarType dtype, FineTuneRequest request, IReadOnlyList<Device> devices)
    {
        var weights = PipelinePlacement.CheckpointBytes(directory, config, dtype);
        if (request.Method == FineTuneMethod.Full)
        {
            // Every weight is trained in float32 (dtype): its gradient and two moments are three more copies.
            const int copies = TrainedBytesPerElement / 4;
            return PipelinePlacement.Plan(weights.Layers, weights.Layers.Select(w => (copies - 1) * w).ToArray(),
                copies * weights.Embedding, copies * weights.Head, devices);
        }
        var settings = new LoraSettings { R = request.R, Alpha = request.Alpha, TargetModules = request.TargetModules };
        var adapter = TrainedBytesPerElement * LoraElementsPerLayer(config, settings);
        return PipelinePlacement.Plan(weights.Layers, Enumerable.Repeat(adapter, weights.Layers.Count).ToArray(), weights.Embedding, weights.Head, devices);
    }

    /// <summary>LoRA A and B elements of one decoder layer: <c>r·(in + out)</c> per targeted projection.</summary>
    public static long LoraElementsPerLayer(LlamaConfig config, LoraSettings settings)
    {
        long attention = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        (string Name, long In, long Out)[] projections =
        [
            ("self_attn.q_proj", config.HiddenSize, attention), ("self_attn.k_proj", config.HiddenSize, kv), ("self_attn.v_proj", config.HiddenSize, kv),
            ("self_attn.o_proj", attention, config.HiddenSize), ("mlp.gate_proj", config.HiddenSize, config.IntermediateSize),
            ("mlp.up_proj", config.HiddenSize, config.IntermediateSize), ("mlp.down_proj", config.IntermediateSize, config.HiddenSize),
        ];
        return projections.Where(p => settings.Targets(p.Name)).Sum(p => settings.R * (p.In + p.Out));
    }

    /// <summary>
    /// Loads the base split by <paramref name="plan"/> (every projection read straight onto its shard's device) and
    /// places the rest: embedding on the first shard, norm and head on the last, the layer devices set for the forward.
    /// </summary>
    public static LlamaForCausalLM Load(string directory, ScalarType dtype, ShardPlan plan)
    {
        var model = PipelinePlacement.Load(directory, dtype, plan);
        PipelinePlacement.Place(model, plan);
        model.Model.LayerDevices = Enumerable.Range(0, model.Model.Layers.Count).Select(plan.LayerDevice).ToArray();
        return model;
    }
}
