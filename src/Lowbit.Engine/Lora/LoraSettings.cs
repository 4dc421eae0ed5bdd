namespace Lowbit.Engine.Lora;

/// <summary>
/// The hyper-parameters of a LoRA adapter (PEFT's <c>LoraConfig</c> subset the engine implements):
/// <c>y = base(x) + B·A·dropout(x) · scaling</c> with <c>scaling = alpha / r</c>, or <c>alpha / √r</c> for rsLoRA.
/// </summary>
public sealed record LoraSettings
{
    /// <summary>Llama projection names a LoRA adapter may target.</summary>
    public static IReadOnlyList<string> AllTargets { get; } = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

    public required int R { get; init; }

    public required double Alpha { get; init; }

    public double Dropout { get; init; }

    /// <summary>Projection names (the last segment of the module path, e.g. <c>q_proj</c>).</summary>
    public required IReadOnlyList<string> TargetModules { get; init; }

    public bool UseRslora { get; init; }

    public double Scaling => UseRslora ? Alpha / Math.Sqrt(R) : Alpha / R;

    /// <summary>Whether the module at <paramref name="path"/> (<c>model.layers.3.self_attn.q_proj</c>) is targeted.</summary>
    public bool Targets(string path)
    {
        var dot = path.LastIndexOf('.');
        var leaf = dot < 0 ? path : path[(dot + 1)..];
        return TargetModules.Contains(leaf, StringComparer.Ordinal);
    }
}
