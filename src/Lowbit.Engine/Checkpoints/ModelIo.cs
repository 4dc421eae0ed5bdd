using Lowbit.Engine.Formats;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Checkpoints;

/// <summary>Loads and saves <see cref="LlamaForCausalLM"/> weights in Hugging Face layout.</summary>
public static class ModelIo
{
    /// <summary>Builds a model of <paramref name="checkpoint"/>'s config and loads every tensor, one at a time.</summary>
    public static LlamaForCausalLM Load(Checkpoint checkpoint, ScalarType dtype, Device device)
    {
        var model = new LlamaForCausalLM(checkpoint.Config, dtype, device);
        model.eval();
        LoadInto(model, checkpoint);
        return model;
    }

    /// <summary>Copies every parameter of <paramref name="model"/> from the checkpoint; fails naming missing or unexpected tensors.</summary>
    public static void LoadInto(LlamaForCausalLM model, Checkpoint checkpoint)
    {
        var parameters = model.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        var missing = parameters.Keys.Where(n => !checkpoint.Contains(n)).ToList();
        if (missing.Count > 0)
        {
            throw new EngineInputException($"--model: checkpoint lacks {missing.Count} tensor(s), e.g. {string.Join(", ", missing.Take(3))}");
        }
        var unexpected = checkpoint.TensorNames
            .Where(n => !parameters.ContainsKey(n) && !n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal))
            .Where(n => !(n == "lm_head.weight" && model.Config.TieWordEmbeddings))
            .ToList();
        if (unexpected.Count > 0)
        {
            throw new EngineInputException($"--model: checkpoint has {unexpected.Count} tensor(s) the {model.Config.Architecture} layout does not, e.g. {string.Join(", ", unexpected.Take(3))}");
        }
        using var noGrad = no_grad();
        foreach (var (name, parameter) in parameters)
        {
            CopyInto(parameter, checkpoint, name);
        }
    }

    /// <summary>Loads decoder layer <paramref name="index"/> of the checkpoint into <paramref name="layer"/> (dense projections).</summary>
    public static void LoadLayer(LlamaDecoderLayer layer, Checkpoint checkpoint, int index)
    {
        using var noGrad = no_grad();
        foreach (var (name, parameter) in layer.named_parameters())
        {
            CopyInto(parameter, checkpoint, $"model.layers.{index}.{name}");
        }
    }

    private static void CopyInto(Tensor parameter, Checkpoint checkpoint, string name)
    {
        var info = checkpoint.Info(name);
        if (!info.Shape.SequenceEqual(parameter.shape))
        {
            throw new EngineInputException($"--model: tensor '{name}' has shape [{string.Join(",", info.Shape)}], the config implies [{string.Join(",", parameter.shape)}]");
        }
        using var loaded = checkpoint.Load(name, parameter.dtype, parameter.device);
        parameter.copy_(loaded);
    }

    /// <summary>Writes config.json and model.safetensors (one file) for <paramref name="model"/>.</summary>
    public static void Save(LlamaForCausalLM model, string directory, ScalarType? dtype = null)
    {
        Directory.CreateDirectory(directory);
        var storeAs = dtype ?? model.Dtype;
        File.WriteAllText(Path.Combine(directory, "config.json"), (model.Config with { TorchDtype = DtypeName(storeAs) }).ToJson());
        using var scope = NewDisposeScope();
        var tensors = model.named_parameters()
            .Select(p => new KeyValuePair<string, Tensor>(p.name, p.parameter.detach().to(storeAs).cpu()))
            .ToList();
        SafetensorsWriter.Write(Path.Combine(directory, Checkpoint.SingleFile), tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>
    /// Initializes weights like transformers (normal(0, std) for projections, embeddings and biases; norms 1) from
    /// <paramref name="seed"/>, drawn on the CPU so the same seed gives the same weights on every device.
    /// </summary>
    public static void InitializeRandom(LlamaForCausalLM model, long seed, double std = 0.02)
    {
        using var noGrad = no_grad();
        var generator = new Generator((ulong)seed);
        foreach (var (name, parameter) in model.named_parameters())
        {
            if (name.EndsWith("norm.weight", StringComparison.Ordinal))
            {
                parameter.fill_(Scalars.Of(1.0));
                continue;
            }
            using var values = empty(parameter.shape, ScalarType.Float32, CPU).normal_(0, std, generator);
            parameter.copy_(values);
        }
    }

    public static string DtypeName(ScalarType type) => type switch
    {
        ScalarType.Float32 => "float32",
        ScalarType.Float16 => "float16",
        ScalarType.BFloat16 => "bfloat16",
        ScalarType.Float64 => "float64",
        _ => type.ToString().ToLowerInvariant(),
    };

    /// <summary>Parses a config dtype name (<c>bfloat16</c>, <c>float16</c>, <c>float32</c>).</summary>
    public static ScalarType ParseDtype(string? name) => name switch
    {
        "bfloat16" or "bf16" => ScalarType.BFloat16,
        "float16" or "fp16" or "half" => ScalarType.Float16,
        "float64" => ScalarType.Float64,
        _ => ScalarType.Float32,
    };
}
