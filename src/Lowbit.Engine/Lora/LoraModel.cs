using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>Wraps a loaded model's projections in <see cref="LoraLinear"/>s, loads, extracts and merges adapters.</summary>
public static class LoraModel
{
    /// <summary>
    /// Freezes every base parameter and wraps each targeted projection; A is initialised from <paramref name="seed"/>
    /// (drawn on the CPU, so the same seed gives the same adapter on every device), B is zero.
    /// Returns the wrapped modules by path, in model order. <paramref name="deviceOf"/> (a pipeline split) puts each
    /// module's A and B on its projection's shard instead of <paramref name="device"/>.
    /// </summary>
    public static IReadOnlyList<(string Path, LoraLinear Module)> Wrap(LlamaForCausalLM model, LoraSettings settings, long seed, Device device,
        Func<string, Device>? deviceOf = null)
    {
        if (settings.TargetModules.Count == 0)
        {
            throw new EngineInputException("--target-modules: no projection selected");
        }
        foreach (var parameter in model.parameters())
        {
            parameter.requires_grad_(false);
        }
        var wrapped = new List<(string, LoraLinear)>();
        using var generator = new Generator(unchecked((ulong)seed));
        model.ReplaceLinears((path, current) =>
        {
            if (!settings.Targets(path))
            {
                return null;
            }
            var lora = new LoraLinear(current, settings, wrapped.Count, deviceOf?.Invoke(path) ?? device);
            lora.Initialize(generator);
            wrapped.Add((path, lora));
            return lora;
        });
        model.train(model.training);   // new modules start in training mode; follow the model's
        return wrapped;
    }

    /// <summary>Wraps the adapter's modules and loads its weights (for eval / serve).</summary>
    public static IReadOnlyList<(string Path, LoraLinear Module)> Apply(LlamaForCausalLM model, PeftAdapter adapter, Device device)
    {
        var modules = adapter.Modules;
        var settings = adapter.Settings with { TargetModules = LoraSettings.AllTargets };
        var present = new HashSet<string>(StringComparer.Ordinal);
        model.ReplaceLinears((path, _) => { present.Add(path); return null; });
        var unknown = modules.Keys.Where(m => !present.Contains(m)).ToList();
        if (unknown.Count > 0)
        {
            throw new EngineInputException($"--adapter: {unknown.Count} adapted module(s) are not projections of this base model, e.g. {string.Join(", ", unknown.Take(3))}");
        }
        foreach (var parameter in model.parameters())
        {
            parameter.requires_grad_(false);
        }
        var wrapped = new List<(string, LoraLinear)>();
        model.ReplaceLinears((path, current) =>
        {
            if (!modules.TryGetValue(path, out var weights))
            {
                return null;
            }
            var lora = new LoraLinear(current, settings, wrapped.Count, device);
            lora.Load(weights);
            lora.A.requires_grad_(false);
            lora.B.requires_grad_(false);
            wrapped.Add((path, lora));
            return lora;
        });
        model.train(model.training);   // new modules start in training mode (dropout on); follow the model's
        return wrapped;
    }

    /// <summary>The trained adapter (copies of A and B) for saving.</summary>
    public static PeftAdapter Extract(IReadOnlyList<(string Path, LoraLinear Module)> modules, LoraSettings settings, string baseModel) =>
        new(settings, baseModel, modules.ToDictionary(m => m.Path, m => m.Module.Weights(), StringComparer.Ordinal));

    /// <summary>
    /// Replaces every <see cref="LoraLinear"/> by a <see cref="DenseLinear"/> holding <c>W + scaling·B·A</c> in
    /// <paramref name="dtype"/>; any other non-dense projection (a quantized base, lm_head included) is dequantized
    /// too, so the result saves as an ordinary 16-bit Hugging Face checkpoint.
    /// </summary>
    public static void Merge(LlamaForCausalLM model, ScalarType dtype)
    {
        model.ReplaceLinears((_, current) =>
        {
            if (current is DenseLinear)
            {
                return null;
            }
            // The new module's parameters must outlive any dispose scope, so it is built outside one.
            using var weight = current.DenseWeight(dtype).DetachFromDisposeScope();
            using var bias = current.DenseBias(dtype)?.DetachFromDisposeScope();
            var dense = new DenseLinear(current.InFeatures, current.OutFeatures, bias is not null, dtype, weight.device);
            using (no_grad())
            {
                dense.Weight.copy_(weight);
                dense.Bias?.copy_(bias!);
            }
            current.Dispose();
            return dense;
        }, includeLmHead: true);
    }
}
