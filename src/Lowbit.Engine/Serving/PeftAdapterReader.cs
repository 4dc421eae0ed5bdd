using System.Text.Json.Nodes;
using Lowbit.Engine.Formats;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// Reads a PEFT LoRA folder for the server (<c>adapter_config.json</c>: <c>r</c>, <c>lora_alpha</c>,
/// <c>use_rslora</c>; <c>adapter_model.safetensors</c>: <c>base_model.model.&lt;module&gt;.lora_A.weight</c> [r, in] and
/// <c>lora_B.weight</c> [out, r]). Minimal on purpose: the engine's full PEFT reader/writer lives with the finetune verb
/// (Lora/PeftAdapter); this one only needs the factors and the scaling.
/// </summary>
public static class PeftAdapterReader
{
    private const string Prefix = "base_model.model.";

    public static AdapterWeights Read(string directory, Device device)
    {
        var configPath = Path.Combine(directory, "adapter_config.json");
        var weightsPath = Path.Combine(directory, "adapter_model.safetensors");
        if (!File.Exists(configPath) || !File.Exists(weightsPath))
        {
            throw new EngineInputException($"{directory} needs adapter_config.json and adapter_model.safetensors (a PEFT LoRA folder saved with safe_serialization)");
        }
        var config = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject ?? throw new EngineInputException($"{configPath}: not a JSON object");
        if ((string?)config["peft_type"] is { } type && type != "LORA")
        {
            throw new EngineInputException($"{configPath}: peft_type {type} is not LORA");
        }
        if (config["use_dora"] is JsonValue dora && dora.TryGetValue<bool>(out var isDora) && isDora)
        {
            throw new EngineInputException($"{configPath}: DoRA adapters are not supported");
        }
        var rank = config["r"] is JsonValue r && r.TryGetValue<double>(out var rv) && rv >= 1 ? rv : throw new EngineInputException($"{configPath}: r must be a positive integer");
        var alpha = config["lora_alpha"] is JsonValue a && a.TryGetValue<double>(out var av) ? av : rank;
        var rslora = config["use_rslora"] is JsonValue rs && rs.TryGetValue<bool>(out var isRs) && isRs;
        var scaling = rslora ? alpha / Math.Sqrt(rank) : alpha / rank;
        using var file = SafetensorsFile.Open(weightsPath);
        var modules = new Dictionary<string, (Tensor A, Tensor B)>(StringComparer.Ordinal);
        foreach (var key in file.Tensors.Keys.Where(k => k.EndsWith(".lora_A.weight", StringComparison.Ordinal) || k.EndsWith(".lora_A.default.weight", StringComparison.Ordinal)))
        {
            var module = key[..key.LastIndexOf(".lora_A.", StringComparison.Ordinal)];
            var keyB = key.Replace(".lora_A.", ".lora_B.", StringComparison.Ordinal);
            if (!file.Tensors.ContainsKey(keyB))
            {
                throw new EngineInputException($"{weightsPath}: {key} has no {keyB}");
            }
            var name = module.StartsWith(Prefix, StringComparison.Ordinal) ? module[Prefix.Length..] : module;
            modules[name] = (file.Load(key, ScalarType.Float32, device), file.Load(keyB, ScalarType.Float32, device));
        }
        if (modules.Count == 0)
        {
            throw new EngineInputException($"{weightsPath}: no lora_A/lora_B tensors");
        }
        return new AdapterWeights(scaling, modules);
    }
}
