using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>
/// Writes a LoRA adapter in llama.cpp's GGUF adapter format (convert_lora_to_gguf.py): <c>general.architecture</c>
/// <c>llama</c>, <c>general.type</c> <c>adapter</c>, <c>adapter.type</c> <c>lora</c>, <c>adapter.lora.alpha</c> (f32);
/// per adapted projection <c>blk.N.attn_q.weight.lora_a</c> (GGUF dims [in, r], i.e. torch [r, in]) and
/// <c>.lora_b</c> ([r, out]), F32. The q/k B rows get the same per-head permutation as the base weights (GGUF Llama
/// stores q/k in Meta's interleaved RoPE order). llama.cpp scales by alpha / r, so rsLoRA adapters are written with
/// alpha = scaling · r, which gives the same update.
/// </summary>
public static class GgufLoraAdapter
{
    public static long Write(string path, PeftAdapter adapter, LlamaConfig config)
    {
        var metadata = new List<KeyValuePair<string, GgufValue>>
        {
            new("general.architecture", GgufValue.Of("llama")),
            new("general.type", GgufValue.Of("adapter")),
            new("adapter.type", GgufValue.Of("lora")),
            new("adapter.lora.alpha", GgufValue.Of((float)(adapter.Scaling * adapter.Settings.R))),
        };
        var tensors = new List<GgufTensor>();
        foreach (var (module, weights) in adapter.Modules.OrderBy(kv => LayerOf(kv.Key)).ThenBy(kv => kv.Key, StringComparer.Ordinal))
        {
            var name = GgufLlamaExport.TensorName(module + ".weight")
                ?? throw new EngineInputException($"--gguf-adapter: no GGUF name for {module}");
            var heads = name.EndsWith("attn_q.weight", StringComparison.Ordinal) ? config.NumAttentionHeads
                : name.EndsWith("attn_k.weight", StringComparison.Ordinal) ? config.NumKeyValueHeads : 0;
            tensors.Add(Tensor(name + ".lora_a", weights.A, 0));
            tensors.Add(Tensor(name + ".lora_b", weights.B, heads));
        }
        using (var stream = new FileStream(path + ".tmp", FileMode.Create, FileAccess.ReadWrite, FileShare.None, 1 << 20))
        {
            GgufWriter.Write(stream, metadata, tensors);
        }
        File.Move(path + ".tmp", path, overwrite: true);
        return new FileInfo(path).Length;
    }

    private static int LayerOf(string module)
    {
        var parts = module.Split('.');
        return parts.Length > 2 && int.TryParse(parts[2], out var i) ? i : -1;
    }

    private static GgufTensor Tensor(string name, Tensor weight, int permuteHeads)
    {
        using var scope = NewDisposeScope();
        var t = weight.detach().to(ScalarType.Float32).cpu();
        if (permuteHeads > 0)
        {
            t = GgufLlamaExport.PermuteForGguf(t, permuteHeads);
        }
        var data = t.contiguous().data<float>().ToArray();
        return new GgufTensor(name, weight.shape.Reverse().ToArray(), GgmlType.F32, GgmlQuants.Encode(GgmlType.F32, data));
    }
}
