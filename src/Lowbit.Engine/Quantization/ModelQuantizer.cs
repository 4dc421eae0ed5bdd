using System.Diagnostics;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Quantization;

/// <summary>
/// Whole-model quantization options: one method for every decoder projection (embeddings stay dense; lm_head too unless
/// <see cref="QuantizeHead"/>).
/// </summary>
public sealed record ModelQuantizeOptions
{
    public required QuantizationMethod Method { get; init; }

    /// <summary>Width of every layer; with <see cref="TargetBitsPerWeight"/> the widest width of the mix.</summary>
    public int Bits { get; init; } = 4;

    /// <summary>Inputs per group; 0 = one group per output row.</summary>
    public int GroupSize { get; init; } = 64;

    /// <summary>Mixed precision: allocate widths from <see cref="MixedCandidates"/> (≤ <see cref="Bits"/>) to meet this average.</summary>
    public double? TargetBitsPerWeight { get; init; }

    public IReadOnlyList<int> MixedCandidates { get; init; } = [2, 3, 4, 8];

    /// <summary>Calibration token ids <c>[samples, tokens]</c>; required for GPTQ, optional (activation-weighted sensitivity) for mixed precision.</summary>
    public Tensor? Calibration { get; init; }

    /// <summary>Calibration sequences per forward pass (bounds attention memory).</summary>
    public int CalibrationBatch { get; init; } = 4;

    public Device Device { get; init; } = CPU;

    /// <summary>RTN and GPTQ: zero fixed at the code midpoint (vLLM Marlin's GPTQ layout).</summary>
    public bool Symmetric { get; init; }

    /// <summary>RTN and GPTQ: asymmetric zero-points within 1..2^bits−1, so a GPTQ v1 export can store every one.</summary>
    public bool RepresentableZeros { get; init; }

    /// <summary>
    /// Quantize lm_head as well, at <see cref="Bits"/> with the same method (GPTQ's Hessian from the calibration hidden
    /// states after the final RMSNorm, the head's input). Refused for a model whose head is its embedding table.
    /// </summary>
    public bool QuantizeHead { get; init; }

    /// <summary>Overrides for HQQ's solver (bits and group size are taken from this record).</summary>
    public HqqOptions Hqq { get; init; } = new();

    /// <summary>Overrides for GPTQ (bits and group size are taken from this record).</summary>
    public GptqOptions Gptq { get; init; } = new();
}

/// <summary>Where the quantizer reads weights from: a checkpoint, or generated weights for benchmarks.</summary>
public interface IWeightSource
{
    LlamaConfig Config { get; }

    Tensor Load(string name, ScalarType dtype, Device device);
}

/// <summary>A checkpoint's tensors (memory-mapped, one at a time).</summary>
public sealed class CheckpointWeights(Checkpoint checkpoint) : IWeightSource
{
    public LlamaConfig Config => checkpoint.Config;

    public Tensor Load(string name, ScalarType dtype, Device device) => checkpoint.Load(name, dtype, device);
}

/// <summary>
/// Deterministic random weights of a config's shapes (norms 1, everything else normal(0, std) rounded through
/// <paramref name="storage"/>), generated on the device on demand: a 7B-shaped model without a 13 GB file.
/// </summary>
public sealed class RandomWeights(LlamaConfig config, ScalarType storage = ScalarType.BFloat16, double std = 0.02, long seed = 0) : IWeightSource
{
    public LlamaConfig Config => config;

    public Tensor Load(string name, ScalarType dtype, Device device)
    {
        using var scope = NewDisposeScope();
        var shape = Shape(name);
        if (name.EndsWith("norm.weight", StringComparison.Ordinal))
        {
            return torch.ones(shape, dtype: dtype, device: device).MoveToOuterDisposeScope();
        }
        // The default generators (seeded per tensor): a CUDA tensor is generated on the GPU, which a CPU Generator can't do.
        torch.random.manual_seed(seed * 1_000_003 + StableHash(name));
        var t = torch.randn(shape, dtype: ScalarType.Float32, device: device).mul_(Scalars.Of(std)).to(storage).to(dtype);
        return t.MoveToOuterDisposeScope();
    }

    private long[] Shape(string name)
    {
        long h = config.HiddenSize, i = config.IntermediateSize, q = (long)config.NumAttentionHeads * config.HeadDim, kv = (long)config.NumKeyValueHeads * config.HeadDim;
        var part = name.Contains(".layers.", StringComparison.Ordinal) ? name[(name.IndexOf('.', name.IndexOf(".layers.", StringComparison.Ordinal) + 8) + 1)..] : name;
        return part switch
        {
            "model.embed_tokens.weight" or "lm_head.weight" => [config.VocabSize, h],
            "model.norm.weight" or "input_layernorm.weight" or "post_attention_layernorm.weight" => [h],
            "self_attn.q_proj.weight" => [q, h],
            "self_attn.k_proj.weight" or "self_attn.v_proj.weight" => [kv, h],
            "self_attn.o_proj.weight" => [h, q],
            "mlp.gate_proj.weight" or "mlp.up_proj.weight" => [i, h],
            "mlp.down_proj.weight" => [h, i],
            _ => throw new KeyNotFoundException($"no tensor '{name}' in a {config.Architecture} of this config"),
        };
    }

    private static long StableHash(string s)
    {
        ulong hash = 14695981039346656037;
        foreach (var c in s)
        {
            hash = (hash ^ c) * 1099511628211;
        }
        return (long)(hash & 0x7FFFFFFF);
    }
}

/// <summary>One projection's outcome: width, relative reconstruction error ‖W − Ŵ‖/‖W‖, size.</summary>
public sealed record QuantizedLayerReport(string Name, int Bits, double RelativeError, long Parameters, long StorageBytes);

/// <summary>The quantized projections of a model (keyed by checkpoint prefix, e.g. <c>model.layers.0.self_attn.q_proj</c>) and how it went.</summary>
public sealed class QuantizedModel : IDisposable
{
    public required LlamaConfig Config { get; init; }

    public required QuantizationMethod Method { get; init; }

    public required IReadOnlyDictionary<string, QuantizedTensor> Linears { get; init; }

    public required IReadOnlyList<QuantizedLayerReport> Layers { get; init; }

    public BitAllocation? Allocation { get; init; }

    public double MeanRelativeError => Layers.Count == 0 ? 0 : Layers.Average(l => l.RelativeError);

    /// <summary>Bits per quantized weight (codes + fp16 scales/zeros + g_idx) over the quantized projections.</summary>
    public double BitsPerWeight => Layers.Sum(l => (double)l.StorageBytes) * 8 / Layers.Sum(l => (double)l.Parameters);

    public void Dispose()
    {
        foreach (var q in Linears.Values)
        {
            q.Dispose();
        }
    }
}

/// <summary>
/// Quantizes a checkpoint decoder layer by decoder layer, so only one layer's weights are dense in memory at a time.
/// Without calibration each projection is loaded, quantized and dropped. With calibration (GPTQ) the calibration
/// hidden states flow through the layers: each layer's projections see their inputs through capturing wrappers
/// (the Hessian running mean), are quantized, and the layer is re-run with the quantized projections to produce
/// the next layer's inputs (AutoGPTQ's sequential order across layers; q/k/v and gate/up share one Hessian).
/// </summary>
public static class ModelQuantizer
{
    private static readonly string[] ProjectionNames =
        ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"];

    /// <summary>
    /// Quantizes every decoder projection (and lm_head with <see cref="ModelQuantizeOptions.QuantizeHead"/>);
    /// <paramref name="progress"/> gets (layers done, layers).
    /// </summary>
    public static QuantizedModel Quantize(Checkpoint checkpoint, ModelQuantizeOptions options, Action<int, int>? progress = null) =>
        Quantize(new CheckpointWeights(checkpoint), options, progress);

    /// <summary>Quantizes every decoder projection of <paramref name="checkpoint"/>'s weights.</summary>
    public static QuantizedModel Quantize(IWeightSource checkpoint, ModelQuantizeOptions options, Action<int, int>? progress = null)
    {
        if (options.Method == QuantizationMethod.Gptq && options.Calibration is null)
        {
            throw new EngineInputException("--calibration: required for --method gptq");
        }
        if (options.QuantizeHead && checkpoint.Config.TieWordEmbeddings)
        {
            // Before any layer is quantized: GPTQ on a large model takes hours.
            throw new EngineInputException("--quantize-head: this model's lm_head is its input embedding table (tie_word_embeddings: true), which stays dense; drop --quantize-head");
        }
        using var noGrad = no_grad();
        var config = checkpoint.Config;
        var layers = config.NumHiddenLayers;
        var bitsByLayer = new Dictionary<string, int>(StringComparer.Ordinal);
        BitAllocation? allocation = null;
        if (options.TargetBitsPerWeight is { } target)
        {
            allocation = Allocate(checkpoint, options, target);
            foreach (var (name, bits) in allocation.BitsByLayer)
            {
                bitsByLayer[name] = bits;
            }
        }
        int BitsOf(string name) => bitsByLayer.TryGetValue(name, out var b) ? b : options.Bits;

        var linears = new Dictionary<string, QuantizedTensor>(StringComparer.Ordinal);
        var reports = new List<QuantizedLayerReport>();
        Tensor? hidden = options.Calibration is null ? null : Embed(checkpoint, options);
        try
        {
            for (var i = 0; i < layers; i++)
            {
                using var scope = NewDisposeScope();
                if (hidden is null)
                {
                    foreach (var projection in ProjectionNames)
                    {
                        using var inner = NewDisposeScope();
                        var name = $"model.layers.{i}.{projection}";
                        var weight = checkpoint.Load(name + ".weight", ScalarType.Float32, options.Device);
                        var q = QuantizeOne(weight, null, BitsOf(name), options);
                        Record(name, weight, q, linears, reports);
                    }
                }
                else
                {
                    var next = QuantizeLayerWithCalibration(checkpoint, i, hidden, options, BitsOf, linears, reports);
                    hidden.Dispose();
                    hidden = next.DetachFromDisposeScope();
                }
                progress?.Invoke(i + 1, layers);
            }
            if (options.QuantizeHead)
            {
                QuantizeHead(checkpoint, options, hidden, linears, reports);
            }
        }
        finally
        {
            hidden?.Dispose();
        }
        return new QuantizedModel { Config = config, Method = options.Method, Linears = linears, Layers = reports, Allocation = allocation };
    }

    /// <summary>The module name a quantized lm_head has in <see cref="QuantizedModel.Linears"/> and in exports.</summary>
    public const string HeadName = "lm_head";

    /// <summary>
    /// lm_head at <see cref="ModelQuantizeOptions.Bits"/> (with a mixed-precision target the widest width, outside the
    /// allocation), recorded as <see cref="HeadName"/>.
    /// </summary>
    private static void QuantizeHead(IWeightSource checkpoint, ModelQuantizeOptions options, Tensor? hidden,
        Dictionary<string, QuantizedTensor> linears, List<QuantizedLayerReport> reports)
    {
        var config = checkpoint.Config;
        using var scope = NewDisposeScope();
        var weight = checkpoint.Load(HeadName + ".weight", ScalarType.Float32, options.Device);
        HessianAccumulator? accumulator = null;
        try
        {
            if (options.Method == QuantizationMethod.Gptq)
            {
                // The head's input: the last layer's (quantized-path) hidden states through the final RMSNorm.
                var states = hidden ?? throw new InvalidOperationException("GPTQ needs the calibration hidden states");
                using var norm = new RmsNorm(config.HiddenSize, config.RmsNormEps, ScalarType.Float32, options.Device);
                using (var stored = checkpoint.Load("model.norm.weight", ScalarType.Float32, options.Device))
                {
                    norm.Weight.copy_(stored);
                }
                accumulator = new HessianAccumulator(config.HiddenSize, options.Device);
                var batch = Math.Max(1, options.CalibrationBatch);
                for (var first = 0L; first < states.shape[0]; first += batch)
                {
                    using var inner = NewDisposeScope();
                    accumulator.Add(norm.forward(states.narrow(0, first, Math.Min(batch, states.shape[0] - first))));
                }
            }
            var q = QuantizeOne(weight, accumulator?.Hessian, options.Bits, options);
            Record(HeadName, weight, q, linears, reports);
        }
        finally
        {
            accumulator?.Dispose();
        }
    }

    private static void Record(string name, Tensor weight, QuantizedTensor q, Dictionary<string, QuantizedTensor> linears, List<QuantizedLayerReport> reports)
    {
        using var scope = NewDisposeScope();
        var error = weight.sub(q.Dequantize()).norm().item<float>() / Math.Max(weight.norm().item<float>(), 1e-12f);
        linears[name] = q.DetachFromDisposeScope();
        reports.Add(new QuantizedLayerReport(name, q.Bits, error, q.OutFeatures * q.InFeatures, q.StorageBytes));
    }

    private static QuantizedTensor QuantizeOne(Tensor weight, Tensor? hessian, int bits, ModelQuantizeOptions options) => options.Method switch
    {
        QuantizationMethod.Rtn => Rtn.Quantize(weight, new RtnOptions { Bits = bits, GroupSize = options.GroupSize, Symmetric = options.Symmetric, RepresentableZeros = options.RepresentableZeros }),
        QuantizationMethod.Hqq => Hqq.Quantize(weight, options.Hqq with { Bits = bits, GroupSize = options.GroupSize }),
        QuantizationMethod.Gptq => Gptq.Quantize(weight, hessian ?? throw new InvalidOperationException("GPTQ needs a Hessian"), options.Gptq with { Bits = bits, GroupSize = options.GroupSize, Symmetric = options.Symmetric || options.Gptq.Symmetric, RepresentableZeros = options.RepresentableZeros || options.Gptq.RepresentableZeros }),
        _ => throw new ArgumentOutOfRangeException(nameof(options), options.Method, null),
    };

    private static Tensor Embed(IWeightSource checkpoint, ModelQuantizeOptions options)
    {
        using var scope = NewDisposeScope();
        var table = checkpoint.Load("model.embed_tokens.weight", ScalarType.Float32, options.Device);
        var ids = options.Calibration!.to(ScalarType.Int64).to(options.Device);
        if (ids.dim() != 2)
        {
            throw new EngineInputException("--calibration: token ids must be [samples, tokens]");
        }
        return table.index_select(0, ids.reshape(-1)).reshape(ids.shape[0], ids.shape[1], -1).MoveToOuterDisposeScope();
    }

    private static void LoadLayer(LlamaDecoderLayer layer, IWeightSource source, int index)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in layer.named_parameters())
        {
            using var loaded = source.Load($"model.layers.{index}.{name}", parameter.dtype, parameter.device);
            parameter.copy_(loaded);
        }
    }

    /// <summary>Runs <paramref name="layer"/> over the hidden states in batches.</summary>
    private static Tensor RunLayer(LlamaDecoderLayer layer, Tensor hidden, LlamaConfig config, int index, int batch)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var (cos, sin) = new RotaryEmbedding(config).CosSin(0, hidden.shape[1], hidden.dtype, hidden.device);
        var context = new AttentionContext { Cos = cos, Sin = sin, Offset = 0, LayerIndex = index };
        var outputs = new List<Tensor>();
        for (long b = 0; b < hidden.shape[0]; b += batch)
        {
            outputs.Add(layer.forward(hidden.narrow(0, b, Math.Min(batch, hidden.shape[0] - b)), context));
        }
        return torch.cat(outputs, 0).MoveToOuterDisposeScope();
    }

    private static Tensor QuantizeLayerWithCalibration(IWeightSource checkpoint, int index, Tensor hidden, ModelQuantizeOptions options,
        Func<string, int> bitsOf, Dictionary<string, QuantizedTensor> linears, List<QuantizedLayerReport> reports)
    {
        var config = checkpoint.Config;
        using var layer = new LlamaDecoderLayer(config, ScalarType.Float32, options.Device);
        layer.eval();
        LoadLayer(layer, checkpoint, index);
        var dense = layer.Projections().ToDictionary(p => p.Name, p => p.Layer, StringComparer.Ordinal);
        // q/k/v read the same input, and so do gate/up: one accumulator per distinct input.
        var shared = new Dictionary<string, string>
        {
            ["self_attn.q_proj"] = "self_attn.q_proj", ["self_attn.k_proj"] = "self_attn.q_proj", ["self_attn.v_proj"] = "self_attn.q_proj",
            ["self_attn.o_proj"] = "self_attn.o_proj", ["mlp.gate_proj"] = "mlp.gate_proj", ["mlp.up_proj"] = "mlp.gate_proj", ["mlp.down_proj"] = "mlp.down_proj",
        };
        var accumulators = new Dictionary<string, HessianAccumulator>(StringComparer.Ordinal);
        var swapped = new List<LinearLayer>();
        try
        {
            foreach (var (name, linear) in dense)
            {
                HessianAccumulator? accumulator = null;
                if (shared[name] == name)
                {
                    accumulator = new HessianAccumulator(linear.InFeatures, options.Device);
                    accumulators[name] = accumulator;
                }
                var capturing = new CapturingLinear(linear, accumulator);
                swapped.Add(capturing);
                layer.ReplaceProjection(name, capturing);
            }
            RunLayer(layer, hidden, config, index, options.CalibrationBatch).Dispose();
            foreach (var (name, linear) in dense)
            {
                using var scope = NewDisposeScope();
                var prefix = $"model.layers.{index}.{name}";
                var weight = linear.DenseWeight(ScalarType.Float32);
                var q = QuantizeOne(weight, accumulators[shared[name]].Hessian, bitsOf(prefix), options);
                Record(prefix, weight, q, linears, reports);
                // The layer runs with a dequantized copy so the next layer sees quantized outputs.
                var quantizedLinear = new QuantizedLinear(q, linear.DenseBias(ScalarType.Float32)?.DetachFromDisposeScope(), cacheDense: true, ownsWeight: false);
                swapped.Add(quantizedLinear);
                layer.ReplaceProjection(name, quantizedLinear);
            }
            return RunLayer(layer, hidden, config, index, options.CalibrationBatch);
        }
        finally
        {
            foreach (var a in accumulators.Values)
            {
                a.Dispose();
            }
            foreach (var d in dense.Values.Concat(swapped))
            {
                d.Dispose();
            }
        }
    }

    /// <summary>Measures every projection's error at each candidate width and allocates widths to meet the target.</summary>
    private static BitAllocation Allocate(IWeightSource checkpoint, ModelQuantizeOptions options, double target)
    {
        var candidates = options.MixedCandidates.Where(b => b <= options.Bits).Order().ToArray();
        if (candidates.Length == 0)
        {
            throw new EngineInputException($"--bits: {options.Bits} is below every mixed-precision width ({string.Join(", ", options.MixedCandidates)})");
        }
        var diagonals = options.Calibration is null ? null : InputEnergy(checkpoint, options);
        var sensitivities = new List<LayerSensitivity>();
        var proxy = options with { Method = options.Method == QuantizationMethod.Gptq ? QuantizationMethod.Rtn : options.Method };
        for (var i = 0; i < checkpoint.Config.NumHiddenLayers; i++)
        {
            foreach (var projection in ProjectionNames)
            {
                using var scope = NewDisposeScope();
                var name = $"model.layers.{i}.{projection}";
                var weight = checkpoint.Load(name + ".weight", ScalarType.Float32, options.Device);
                var diagonal = diagonals?[name];
                sensitivities.Add(BitAllocator.Measure(name, weight, diagonal, candidates, (w, b) => QuantizeOne(w, null, b, proxy)));
            }
        }
        try
        {
            return BitAllocator.Allocate(sensitivities, new MixedPrecisionOptions { TargetBitsPerWeight = target, Candidates = candidates, GroupSize = options.GroupSize });
        }
        catch (ArgumentOutOfRangeException ex)
        {
            throw new EngineInputException(ex.Message.Split(" (Parameter")[0]);
        }
        finally
        {
            if (diagonals is not null)
            {
                foreach (var d in diagonals.Values)
                {
                    d.Dispose();
                }
            }
        }
    }

    /// <summary>Mean squared input per channel of every projection over the calibration set (dense forward pass).</summary>
    private static Dictionary<string, Tensor> InputEnergy(IWeightSource checkpoint, ModelQuantizeOptions options)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var hidden = Embed(checkpoint, options);
        try
        {
            for (var i = 0; i < checkpoint.Config.NumHiddenLayers; i++)
            {
                using var layer = new LlamaDecoderLayer(checkpoint.Config, ScalarType.Float32, options.Device);
                layer.eval();
                LoadLayer(layer, checkpoint, i);
                var wrappers = new List<(string Name, CapturingLinear Wrapper)>();
                foreach (var (name, linear) in layer.Projections().ToList())
                {
                    var wrapper = new CapturingLinear(linear, null, captureEnergy: true);
                    layer.ReplaceProjection(name, wrapper);
                    wrappers.Add((name, wrapper));
                }
                var next = RunLayer(layer, hidden, checkpoint.Config, i, options.CalibrationBatch);
                hidden.Dispose();
                hidden = next;
                foreach (var (name, wrapper) in wrappers)
                {
                    result[$"model.layers.{i}.{name}"] = wrapper.Energy!.DetachFromDisposeScope();
                }
            }
        }
        finally
        {
            hidden.Dispose();
        }
        return result;
    }

    /// <summary>A pass-through projection that records what it sees (the forward hook of the calibration pass).</summary>
    private sealed class CapturingLinear(LinearLayer inner, HessianAccumulator? hessian, bool captureEnergy = false)
        : LinearLayer("CapturingLinear", inner.InFeatures, inner.OutFeatures)
    {
        private long _rows;

        public Tensor? Energy { get; private set; }

        public override Tensor forward(Tensor input)
        {
            hessian?.Add(input);
            if (captureEnergy)
            {
                using var scope = NewDisposeScope();
                var x = input.reshape(-1, input.shape[^1]).to(ScalarType.Float32);
                var sum = x.pow(Scalars.Of(2)).sum([0]);   // not square(): TorchSharp 0.107 builds an unheld Scalar inside it
                var rows = x.shape[0];
                var updated = Energy is null ? sum.div(Scalars.Of(rows)) : Energy.mul(Scalars.Of(_rows)).add(sum, Scalars.One).div(Scalars.Of(_rows + rows));
                Energy?.Dispose();
                Energy = updated.DetachFromDisposeScope();
                _rows += rows;
            }
            return inner.forward(input);
        }

        public override Tensor DenseWeight(ScalarType dtype) => inner.DenseWeight(dtype);

        public override Tensor? DenseBias(ScalarType dtype) => inner.DenseBias(dtype);
    }
}
