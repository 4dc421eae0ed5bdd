using System.Text.Json;
using System.Text.Json.Nodes;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Formats;

/// <summary>Files a quantized export wrote.</summary>
public sealed record ExportReport(string Format, string Directory, long Bytes, long Parameters)
{
    public double BitsPerWeight => Bytes * 8.0 / Parameters;
}

/// <summary>Helpers shared by the safetensors-based exports.</summary>
internal static class ExportCommon
{
    public static readonly string[] TokenizerFiles =
        ["tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt"];

    public static void CopyTokenizer(string from, string to)
    {
        foreach (var f in TokenizerFiles.Where(f => File.Exists(Path.Combine(from, f))))
        {
            File.Copy(Path.Combine(from, f), Path.Combine(to, f), overwrite: true);
        }
    }

    public static JsonObject SourceConfig(Checkpoint source) =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(source.Directory, "config.json")))!.AsObject();

    public static string Json(JsonNode node) => node.ToJsonString(new JsonSerializerOptions { WriteIndented = true });

    /// <summary>Non-quantized tensors of the source (embeddings, norms, lm_head, biases of quantized layers), as (name, tensor) loaders.</summary>
    public static IEnumerable<string> DenseNames(Checkpoint source, QuantizedModel model) => source.TensorNames
        .Where(n => !n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal))
        .Where(n => !(n.EndsWith(".weight", StringComparison.Ordinal) && model.Linears.ContainsKey(n[..^".weight".Length])))
        .Order(StringComparer.Ordinal);

    public static long DirectoryBytes(string dir) => new DirectoryInfo(dir).EnumerateFiles().Sum(f => f.Length);

    public static byte[] Bytes<T>(T[] values)
        where T : unmanaged
    {
        var bytes = new byte[values.Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()];
        System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).CopyTo(bytes);
        return bytes;
    }

    public static Half[] ToHalf(Tensor t) => t.to(ScalarType.Float16).cpu().contiguous().data<Half>().ToArray();
}

/// <summary>
/// Lowbit's own safetensors layout. Per quantized projection <c>P</c>: <c>P.qweight</c> U8 (codes bit-packed LSB
/// first, row-major <c>[out, in]</c>), <c>P.scales</c> and <c>P.zeros</c> F16 (<c>[out, groups]</c>, or
/// <c>[groups, in]</c> for axis 0), <c>P.g_idx</c> I32 <c>[in]</c> when act-order made groups non-contiguous.
/// <c>__metadata__</c>: <c>format</c> = <c>lowbit</c>, <c>lowbit.version</c> = <c>1</c>, <c>lowbit.layers</c> = JSON
/// {P: {method, bits, group_size, axis, shape}}. Everything else is the source's tensors unchanged; config.json
/// gains <c>quantization_config</c> (<c>quant_method</c> = <c>lowbit</c>).
/// </summary>
public static class LowbitCheckpoint
{
    public const string FormatName = "lowbit";
    public const string LayersKey = "lowbit.layers";

    public static ExportReport Write(string directory, Checkpoint source, QuantizedModel model)
    {
        Directory.CreateDirectory(directory);
        var layers = new JsonObject();
        var entries = new List<SafetensorsEntry>();
        using var scope = NewDisposeScope();
        foreach (var (prefix, q) in model.Linears.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var codes = q.Codes.cpu().contiguous().data<byte>().ToArray();
            var packed = BitPacking.PackBits(codes, q.Bits);
            entries.Add(new SafetensorsEntry { Name = prefix + ".qweight", Dtype = SafetensorsDtype.U8, Shape = [packed.Length], Bytes = packed });
            entries.Add(SafetensorsEntry.From(prefix + ".scales", q.Scales.to(ScalarType.Float16).cpu()));
            entries.Add(SafetensorsEntry.From(prefix + ".zeros", q.Zeros.to(ScalarType.Float16).cpu()));
            if (q.GroupIndex is not null)
            {
                entries.Add(SafetensorsEntry.From(prefix + ".g_idx", q.GroupIndex.to(ScalarType.Int32).cpu()));
            }
            layers[prefix] = new JsonObject
            {
                ["method"] = q.Method.ToString().ToLowerInvariant(),
                ["bits"] = q.Bits,
                ["group_size"] = q.GroupSize,
                ["axis"] = q.Axis,
                ["shape"] = new JsonArray(q.OutFeatures, q.InFeatures),
            };
        }
        foreach (var name in ExportCommon.DenseNames(source, model))
        {
            entries.Add(SafetensorsEntry.From(name, source.Load(name)));
        }
        SafetensorsWriter.Write(Path.Combine(directory, Checkpoint.SingleFile), entries, new Dictionary<string, string>
        {
            ["format"] = FormatName,
            ["lowbit.version"] = "1",
            [LayersKey] = layers.ToJsonString(),
        });
        var config = ExportCommon.SourceConfig(source);
        config["quantization_config"] = new JsonObject
        {
            ["quant_method"] = FormatName,
            ["method"] = model.Method.ToString().ToLowerInvariant(),
            ["bits"] = model.Layers.Max(l => l.Bits),
            ["group_size"] = model.Linears.Values.First().GroupSize,
            ["bits_per_weight"] = Math.Round(model.BitsPerWeight, 4),
            ["layout"] = model.Allocation?.Layout,
            // GPTQModel's key for a quantized head (quantize --quantize-head): lowbit.layers then lists lm_head.
            ["lm_head"] = model.Linears.ContainsKey(ModelQuantizer.HeadName),
        };
        File.WriteAllText(Path.Combine(directory, "config.json"), ExportCommon.Json(config));
        ExportCommon.CopyTokenizer(source.Directory, directory);
        return new ExportReport(FormatName, directory, ExportCommon.DirectoryBytes(directory), source.Config.ParameterCount);
    }

    /// <summary>True when <paramref name="directory"/> holds a lowbit export (config.json quantization_config.quant_method).</summary>
    public static bool IsLowbit(string directory)
    {
        var path = Path.Combine(directory, "config.json");
        if (!File.Exists(path))
        {
            return false;
        }
        var node = JsonNode.Parse(File.ReadAllText(path));
        return node?["quantization_config"]?["quant_method"]?.GetValue<string>() == FormatName;
    }

    /// <summary>Reads every quantized projection of a lowbit export (one byte per code; for tests and exports).</summary>
    public static Dictionary<string, QuantizedTensor> ReadLinears(string directory, Device? device = null)
    {
        using var file = SafetensorsFile.Open(Path.Combine(directory, Checkpoint.SingleFile));
        var result = new Dictionary<string, QuantizedTensor>(StringComparer.Ordinal);
        foreach (var (prefix, node) in Layers(file, directory))
        {
            using var scope = NewDisposeScope();
            var q = ReadLinear(file, prefix, node);
            result[prefix] = (device is null ? q : q.To(device)).MoveToOuterDisposeScope();
        }
        return result;
    }

    /// <summary>
    /// A model whose projections are the export's quantized layers and the rest dense, built so that no dense projection
    /// is ever allocated (the projections start on the meta device, then each is replaced as it is read). 2-, 4- and
    /// 8-bit layers with groups along the input keep the file's packed bytes as they are (<see cref="PackedQuantizedLinear"/>:
    /// one copy, dequantized per call; the fast decode path's int4 weights are views of it); other layers (3-bit,
    /// act-order, groups along the output) are <see cref="QuantizedLinear"/>s with one byte per code. Layers are read one
    /// at a time, so the host never holds more than one layer's codes. With <paramref name="projectionDevice"/> (a
    /// pipeline split, <c>serve --shards</c>) each projection is read straight onto the device it names for the
    /// projection's module name; everything else goes to <paramref name="device"/>.
    /// </summary>
    public static LlamaForCausalLM Load(string directory, ScalarType dtype, Device device, Func<string, Device>? projectionDevice = null)
    {
        using var checkpoint = Checkpoint.Open(directory);
        using var file = SafetensorsFile.Open(Path.Combine(directory, Checkpoint.SingleFile));
        var layers = Layers(file, directory);
        var model = new LlamaForCausalLM(checkpoint.Config, dtype, device, LlamaForCausalLM.MetaDevice);
        model.eval();
        model.ReplaceLinears((name, current) =>
        {
            var hasBias = checkpoint.Contains(name + ".bias");
            current.Dispose();
            var at = projectionDevice?.Invoke(name) ?? device;
            if (!layers.TryGetValue(name, out var node))
            {
                // A projection the export kept dense: allocated now, filled with the other dense tensors below.
                return new DenseLinear(current.InFeatures, current.OutFeatures, hasBias, dtype, at);
            }
            return ReadLayer(file, name, node, at, hasBias ? checkpoint.Load(name + ".bias", dtype, at) : null);
        }, includeLmHead: true);
        using var noGrad = no_grad();
        foreach (var (name, parameter) in model.named_parameters())
        {
            using var loaded = checkpoint.Load(name, parameter.dtype, parameter.device);
            parameter.copy_(loaded);
        }
        return model;
    }

    private static Dictionary<string, JsonNode> Layers(SafetensorsFile file, string directory)
    {
        if (!file.Metadata.TryGetValue(LayersKey, out var layersJson))
        {
            throw new EngineInputException($"--model: {directory} is not a lowbit export (no {LayersKey} metadata)");
        }
        return JsonNode.Parse(layersJson)!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!, StringComparer.Ordinal);
    }

    private static QuantizedTensor ReadLinear(SafetensorsFile file, string prefix, JsonNode node)
    {
        using var scope = NewDisposeScope();
        var bits = node["bits"]!.GetValue<int>();
        var shape = node["shape"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray();
        var codes = BitPacking.UnpackBits(file.GetBytes(prefix + ".qweight"), bits, shape[0] * shape[1]);
        var method = Enum.Parse<QuantizationMethod>(node["method"]!.GetValue<string>(), ignoreCase: true);
        var gIdx = file.Tensors.ContainsKey(prefix + ".g_idx") ? file.Load(prefix + ".g_idx") : null;
        return QuantizedTensor.Create(method, bits, node["group_size"]!.GetValue<int>(),
            torch.tensor(codes, ScalarType.Byte).reshape(shape),
            file.Load(prefix + ".scales", ScalarType.Float32), file.Load(prefix + ".zeros", ScalarType.Float32), gIdx, node["axis"]!.GetValue<int>())
            .MoveToOuterDisposeScope();
    }

    private static LinearLayer ReadLayer(SafetensorsFile file, string prefix, JsonNode node, Device device, Tensor? bias)
    {
        var bits = node["bits"]!.GetValue<int>();
        var groupSize = node["group_size"]!.GetValue<int>();
        var shape = node["shape"]!.AsArray().Select(v => v!.GetValue<long>()).ToArray();
        var packable = node["axis"]!.GetValue<int>() == 1 && !file.Tensors.ContainsKey(prefix + ".g_idx")
            && PackedQuantizedLinear.IsPackable(bits, groupSize, shape[1]);
        if (!packable)
        {
            using var scope = NewDisposeScope();
            var q = ReadLinear(file, prefix, node);
            var onDevice = q.To(device).DetachFromDisposeScope();
            return new QuantizedLinear(onDevice, bias);
        }
        // PackBits is LSB-first: for whole codes per byte its bytes are PackedQuantizedLinear's rows as they are. Each
        // tensor is read in the layer's shape (not viewed into it), so ShareStorage can release it later.
        long[] groups = [shape[0], shape[1] / groupSize];
        return PackedQuantizedLinear.FromPacked(bits, groupSize, shape[0], shape[1],
            file.Load(prefix + ".qweight", ScalarType.Byte, device, [shape[0], shape[1] * bits / 8]),
            file.Load(prefix + ".scales", null, device, groups), file.Load(prefix + ".zeros", null, device, groups), bias);
    }
}

/// <summary>
/// AutoGPTQ-compatible export (checkpoint_format "gptq", v1 zeros with the −1 offset): per projection <c>qweight</c>
/// I32 <c>[in·bits/32, out]</c>, <c>qzeros</c> I32 <c>[groups, out·bits/32]</c>, <c>scales</c> F16 <c>[groups, out]</c>,
/// <c>g_idx</c> I32 <c>[in]</c>; other tensors F16; <c>quantize_config.json</c> and config.json
/// <c>quantization_config</c>. 4- and 8-bit, integer zero-points (RTN, GPTQ; not HQQ's fractional zeros).
/// </summary>
public static class GptqCheckpoint
{
    public const string FormatName = "gptq";

    public static ExportReport Write(string directory, Checkpoint source, QuantizedModel model, double dampPercent = 0.01, bool descAct = false)
    {
        var first = model.Linears.Values.First();
        var bits = first.Bits;
        var groupSize = first.GroupSize;
        foreach (var (name, q) in model.Linears)
        {
            if (q.Bits is not (4 or 8) || q.Bits != bits || q.GroupSize != groupSize || q.Axis != 1)
            {
                throw new EngineInputException($"--format: gptq needs every layer at one width of 4 or 8 bits, one group size, groups along inputs; {name} has {q.Bits} bits, group {q.GroupSize}, axis {q.Axis}");
            }
            using var scope = NewDisposeScope();
            if (!q.Zeros.eq(q.Zeros.round()).all().item<bool>())
            {
                throw new EngineInputException($"--format: gptq stores integer zero-points; {name} ({q.Method}) has fractional ones (use --format lowbit)");
            }
            // v1 qzeros store zero−1 in `bits` bits; zero 0 would wrap to 2^bits−1 and readers disagree on it.
            if (q.Zeros.lt(Scalars.Of(1)).any().item<bool>() || q.Zeros.gt(Scalars.Of((1 << bits) - 1)).any().item<bool>())
            {
                throw new EngineInputException($"--format: gptq stores zero-points 1..{(1 << bits) - 1}; {name} has a group outside that range (quantize with RepresentableZeros, as the quantize verb does for gptq, or with --scheme sym)");
            }
        }
        Directory.CreateDirectory(directory);
        var entries = new List<SafetensorsEntry>();
        using (var scope = NewDisposeScope())
        {
            foreach (var (prefix, q) in model.Linears.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                var (o, i, g) = ((int)q.OutFeatures, (int)q.InFeatures, (int)q.Scales.shape[1]);
                var qweight = BitPacking.PackGptqWeight(q.Codes.cpu().contiguous().data<byte>().ToArray(), o, i, bits);
                var zeros = q.Zeros.to(ScalarType.Int32).cpu().contiguous().data<int>().ToArray();
                var qzeros = BitPacking.PackGptqZeros(zeros, o, g, bits);
                entries.Add(new SafetensorsEntry { Name = prefix + ".qweight", Dtype = SafetensorsDtype.I32, Shape = [i * bits / 32, o], Bytes = ExportCommon.Bytes(qweight) });
                entries.Add(new SafetensorsEntry { Name = prefix + ".qzeros", Dtype = SafetensorsDtype.I32, Shape = [g, o * bits / 32], Bytes = ExportCommon.Bytes(qzeros) });
                entries.Add(new SafetensorsEntry { Name = prefix + ".scales", Dtype = SafetensorsDtype.F16, Shape = [g, o], Bytes = ExportCommon.Bytes(ExportCommon.ToHalf(q.Scales.t())) });
                using var map = q.GroupMap();
                entries.Add(SafetensorsEntry.From(prefix + ".g_idx", map.to(ScalarType.Int32).cpu()));
            }
            foreach (var name in ExportCommon.DenseNames(source, model))
            {
                entries.Add(SafetensorsEntry.From(name, source.Load(name, ScalarType.Float16)));
            }
            SafetensorsWriter.Write(Path.Combine(directory, Checkpoint.SingleFile), entries,
                new Dictionary<string, string> { ["format"] = "pt", ["gptq_checkpoint_format"] = "gptq" });
        }
        var sym = model.Linears.Values.All(q => { using var s = NewDisposeScope(); return q.Zeros.eq(Scalars.Of((1 << bits) / 2)).all().item<bool>(); });
        var quantizeConfig = new JsonObject
        {
            ["bits"] = bits,
            ["group_size"] = groupSize == first.InFeatures ? -1 : groupSize,
            ["damp_percent"] = dampPercent,
            ["desc_act"] = descAct && model.Linears.Values.Any(q => q.GroupIndex is not null),
            ["static_groups"] = false,
            ["sym"] = sym,
            ["true_sequential"] = false,
            ["quant_method"] = "gptq",
            ["checkpoint_format"] = "gptq",
            ["model_name_or_path"] = null,
            ["model_file_base_name"] = "model",
        };
        File.WriteAllText(Path.Combine(directory, "quantize_config.json"), ExportCommon.Json(quantizeConfig));
        var config = ExportCommon.SourceConfig(source);
        config["torch_dtype"] = "float16";
        config["quantization_config"] = quantizeConfig.DeepClone();
        File.WriteAllText(Path.Combine(directory, "config.json"), ExportCommon.Json(config));
        ExportCommon.CopyTokenizer(source.Directory, directory);
        return new ExportReport(FormatName, directory, ExportCommon.DirectoryBytes(directory), source.Config.ParameterCount);
    }

    /// <summary>Reads one projection back: codes, scales <c>[out, groups]</c>, zeros (+1 restored), and g_idx when it is not k / group.</summary>
    public static QuantizedTensor ReadLinear(string directory, string prefix)
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(directory, "quantize_config.json")))!;
        var bits = config["bits"]!.GetValue<int>();
        using var file = SafetensorsFile.Open(Path.Combine(directory, Checkpoint.SingleFile));
        using var scope = NewDisposeScope();
        var qweight = file.Get(prefix + ".qweight");
        var scales = file.Load(prefix + ".scales", ScalarType.Float32);
        var (groups, outFeatures) = ((int)scales.shape[0], (int)scales.shape[1]);
        var inFeatures = (int)qweight.Shape[0] * 32 / bits;
        var codes = BitPacking.UnpackGptqWeight(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(file.GetBytes(prefix + ".qweight")), outFeatures, inFeatures, bits);
        var zeros = BitPacking.UnpackGptqZeros(System.Runtime.InteropServices.MemoryMarshal.Cast<byte, int>(file.GetBytes(prefix + ".qzeros")), outFeatures, groups, bits);
        var gIdx = file.Load(prefix + ".g_idx", ScalarType.Int64);
        var groupSize = config["group_size"]!.GetValue<int>() is var gs && gs > 0 ? gs : inFeatures;
        var trivial = torch.arange(Scalars.Of(0), Scalars.Of(inFeatures), Scalars.One, dtype: ScalarType.Int64).div(Scalars.Of(groupSize), rounding_mode: RoundingMode.floor);
        var q = QuantizedTensor.Create(QuantizationMethod.Gptq, bits, groupSize,
            torch.tensor(codes, ScalarType.Byte).reshape(outFeatures, inFeatures),
            scales.t(), torch.tensor(zeros, ScalarType.Int32).reshape(outFeatures, groups).to(ScalarType.Float32),
            gIdx.eq(trivial).all().item<bool>() ? null : gIdx);
        return q.MoveToOuterDisposeScope();
    }
}
