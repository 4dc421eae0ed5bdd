using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>
/// The training path of projections that share one input (q/k/v, gate/up, or o and down alone), some or all of them
/// LoRA-adapted (<see cref="LoraLinear"/>): one autograd node (<see cref="LoraGroupFunction"/>) instead of, per
/// projection, the base linear, a <see cref="LoraDelta"/> node and an add. Frozen 16-bit bases are concatenated once
/// into one <c>[Σ out, in]</c> weight whose row blocks the parts' own parameters then view (no second copy; as the
/// decoder's <c>Projection.Fuse</c> does), so the base is one GEMM forward and one GEMM for <c>dX</c> backward; quantized
/// bases are dequantized per part and call, as <see cref="PackedQuantizedLinear"/> does alone. The adapters stay one per
/// projection (PEFT's <c>lora.Linear</c>: its own A, B and dropout mask), computed together: one batched GEMM for the
/// down-projections and one GEMM through the block-diagonal of the Bs. Same math as the per-projection path (tested to
/// 1e-5 in float32); a GEMM's summation order differs, so bf16 results round differently.
/// </summary>
public sealed class LoraProjectionGroup : IDisposable
{
    private Tensor? _weight;
    private Tensor? _bias;
    private TorchSharp.Modules.Parameter[]? _fusedParts;

    /// <summary>Set to <c>0</c> to train with the per-projection path (a fallback, and the comparison a benchmark wants).</summary>
    public const string SwitchEnv = "LOWBIT_LORA_GROUPS";

    private static readonly bool DisabledByEnvironment = Environment.GetEnvironmentVariable(SwitchEnv) == "0";

    [ThreadStatic]
    private static bool _bypassed;

    /// <summary>Tests: this thread's layers take the per-projection path (the formulation this one must equal).</summary>
    internal static bool Bypassed
    {
        get => _bypassed;
        set => _bypassed = value;
    }

    /// <summary>
    /// Whether <paramref name="parts"/> take this path: some part is a <see cref="LoraLinear"/> in training mode, every
    /// adapter has the same settings, and no base parameter is trained (<c>--method full</c> keeps the per-projection
    /// path, whose base weights get their gradients from autograd).
    /// </summary>
    public static bool Applies(IReadOnlyList<LinearLayer> parts)
    {
        if (Bypassed || DisabledByEnvironment)
        {
            return false;
        }
        LoraSettings? settings = null;
        foreach (var part in parts)
        {
            var baseLayer = part;
            if (part is LoraLinear lora)
            {
                if (!lora.training || (settings is not null && !Equals(settings, lora.Settings)) || lora.A.dtype != ScalarType.Float32 || lora.B.dtype != ScalarType.Float32)
                {
                    return false;
                }
                settings = lora.Settings;
                baseLayer = lora.Base;
            }
            switch (baseLayer)
            {
                case LoraLinear:
                    return false;
                case DenseLinear dense when dense.Weight.requires_grad || (dense.Bias?.requires_grad ?? false):
                    return false;
                case DenseLinear or PackedQuantizedLinear:
                    break;
                default:
                    if (baseLayer.parameters().Any(p => p.requires_grad))
                    {
                        return false;
                    }
                    break;
            }
        }
        return settings is not null;
    }

    /// <summary>
    /// <c>[..., Σ out]</c>: the parts' outputs side by side (PEFT's <c>base(x) + B·A·dropout(x)·scaling</c> each) for
    /// <paramref name="input"/> <c>[..., in]</c>. Call only where <see cref="Applies"/> holds.
    /// </summary>
    public Tensor Forward(IReadOnlyList<LinearLayer> parts, Tensor input)
    {
        using var scope = NewDisposeScope();
        var bases = parts.Select(p => p is LoraLinear l ? l.Base : p).ToArray();
        var adapters = parts.OfType<LoraLinear>().ToArray();
        var plan = new GroupPlan
        {
            Parts = parts,
            Bases = bases,
            Adapters = adapters,
            Weight = FusedWeight(bases, input),
        };
        plan = plan with { Bias = plan.Weight is null ? null : bases.Length == 1 ? ((DenseLinear)bases[0]).Bias : _bias };
        var settings = adapters[0].Settings;
        var mask = settings.Dropout > 0 ? DropoutMasks(adapters, input) : null;
        Tensor output;
        if (is_grad_enabled())
        {
            var vars = new object[3 + 2 * adapters.Length];
            vars[0] = input;
            vars[1] = plan;
            vars[2] = mask!;
            for (var i = 0; i < adapters.Length; i++)
            {
                vars[3 + 2 * i] = adapters[i].A;
                vars[4 + 2 * i] = adapters[i].B;
            }
            output = LoraGroupFunction.apply(vars);
        }
        else
        {
            output = GroupMath.Forward(plan, input, mask, null);
        }
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The concatenated base weight when every base is a frozen <see cref="DenseLinear"/> of the input's dtype and device
    /// (all with or all without bias): built on first use, then the parts' parameters are re-pointed to its row blocks;
    /// rebuilt if a part no longer views it (a replaced projection). Null: the bases run one by one.
    /// </summary>
    private Tensor? FusedWeight(LinearLayer[] bases, Tensor input)
    {
        if (!bases.All(b => b is DenseLinear d && d.Weight.dtype == input.dtype && d.Weight.device_type == input.device_type && d.Weight.device_index == input.device_index && d.Weight.is_contiguous())
            || bases.Cast<DenseLinear>().Select(d => d.Bias is null).Distinct().Count() > 1)
        {
            return null;
        }
        var dense = bases.Cast<DenseLinear>().ToArray();
        if (dense.Length == 1)
        {
            return dense[0].Weight;
        }
        if (_weight is not null && Views(dense))
        {
            return _weight;
        }
        Release();
        using var noGrad = no_grad();
        var weight = cat(dense.Select(d => (Tensor)d.Weight).ToArray(), 0).DetachFromDisposeScope();
        var bias = dense[0].Bias is null ? null : cat(dense.Select(d => (Tensor)d.Bias!).ToArray(), 0).DetachFromDisposeScope();
        var row = 0L;
        foreach (var d in dense)
        {
            // set_ re-points the parameter's storage: the original [out, in] block is freed, the fused copy is the only one.
            d.Weight.set_(weight.narrow(0, row, d.OutFeatures));
            d.Bias?.set_(bias!.narrow(0, row, d.OutFeatures));
            row += d.OutFeatures;
        }
        (_weight, _bias, _fusedParts) = (weight, bias, dense.Select(d => d.Weight).ToArray());
        return _weight;
    }

    // The parameters re-pointed at the fused weight. Only ReplaceProjection (which disposes this group) or the decoder's
    // Projection.Fuse (serving, which never takes this training path) re-point them again.
    private bool Views(DenseLinear[] dense) =>
        _fusedParts is { } parts && parts.Length == dense.Length && parts.Zip(dense).All(p => ReferenceEquals(p.First, p.Second.Weight));

    /// <summary>
    /// Bool keep-masks <c>[adapters, N, in]</c> (<c>[N, in]</c> for one adapter), independent per adapter (PEFT draws one per module), seeded on the CPU by
    /// <see cref="LoraLinear.DropoutSeed"/> and the first adapter's index, so a recompute and a resumed run draw the same.
    /// </summary>
    internal static Tensor DropoutMasks(LoraLinear[] adapters, Tensor input)
    {
        var keep = 1.0 - adapters[0].Settings.Dropout;
        var rows = input.NumberOfElements / input.shape[^1];
        long[] shape = adapters.Length == 1 ? [rows, input.shape[^1]] : [adapters.Length, rows, input.shape[^1]];
        return LoraLinear.SeededBernoulli(empty(shape, ScalarType.Bool, input.device), keep, adapters[0].Index);
    }

    private void Release()
    {
        _weight?.Dispose();
        _bias?.Dispose();
        (_weight, _bias, _fusedParts) = (null, null, null);
    }

    /// <summary>Drops the fused weight (the parts keep their views of it; a later call fuses again).</summary>
    public void Dispose() => Release();
}

/// <summary>What one call of a <see cref="LoraProjectionGroup"/> computes with.</summary>
internal sealed record GroupPlan
{
    /// <summary>The model's layers, in output order.</summary>
    public required IReadOnlyList<LinearLayer> Parts { get; init; }

    /// <summary>Each part's frozen base (the part itself when not adapted).</summary>
    public required LinearLayer[] Bases { get; init; }

    public required LoraLinear[] Adapters { get; init; }

    /// <summary>The bases' fused weight <c>[Σ out, in]</c>, or null: each base gives its dense (dequantized) weight per call.</summary>
    public Tensor? Weight { get; init; }

    public Tensor? Bias { get; init; }

    public long OutFeatures => Bases.Sum(b => b.OutFeatures);
}

/// <summary>The arithmetic of a <see cref="LoraProjectionGroup"/>, shared by its autograd node and its no-grad forward.</summary>
internal static class GroupMath
{
    /// <summary>What the forward keeps for the backward: the cast adapter factors and the scaled down-projections.</summary>
    internal sealed record Saved
    {
        /// <summary><c>[G, r, in]</c> with dropout and G &gt; 1 (one mask per adapter), else <c>[G·r, in]</c>, in the input's dtype.</summary>
        public required Tensor A { get; init; }

        /// <summary>Block-diagonal <c>[Σ out, G·r]</c> (zero rows for parts without an adapter), in the input's dtype.</summary>
        public required Tensor B { get; init; }

        /// <summary><c>scaling / keep · dropout-masked x·Aᵀ</c>, <c>[N, G·r]</c>.</summary>
        public required Tensor Down { get; init; }
    }

    public static Tensor Forward(GroupPlan plan, Tensor input, Tensor? mask, List<Tensor>? saved)
    {
        using var scope = NewDisposeScope();
        var dtype = input.dtype;
        var inFeatures = input.shape[^1];
        var x = input.reshape(-1, inFeatures);
        var rows = x.shape[0];
        var output = BaseForward(plan, x);
        var adapters = plan.Adapters;
        var settings = adapters[0].Settings;
        var rank = settings.R;
        var factor = settings.Dropout > 0 ? settings.Scaling / (1.0 - settings.Dropout) : settings.Scaling;
        Tensor a, down;
        if (mask is null || adapters.Length == 1)
        {
            a = (adapters.Length == 1 ? adapters[0].A : cat(adapters.Select(l => (Tensor)l.A).ToArray(), 0)).to(dtype);
            down = (mask is null ? x : mask.mul(x)).mm(a.t());
        }
        else
        {
            // x ⊙ mask per adapter, then one batched GEMM: [G, N, in]·[G, in, r]. 1/keep goes into the scale.
            a = stack(adapters.Select(l => (Tensor)l.A).ToArray(), 0).to(dtype);
            using var dropped = mask.mul(x);
            down = dropped.bmm(a.transpose(1, 2)).transpose(0, 1).reshape(rows, adapters.Length * rank);
        }
        down = down.mul(Scalars.Of(factor));
        var b = UpFactors(plan, dtype);
        output.addmm_(down, b.t(), 1, 1);
        saved?.AddRange([a.MoveToOuterDisposeScope(), b.MoveToOuterDisposeScope(), down.MoveToOuterDisposeScope()]);
        var shape = input.shape.ToArray();
        shape[^1] = output.shape[1];
        return output.view(shape).MoveToOuterDisposeScope();
    }

    /// <summary>The block-diagonal of the Bs in <paramref name="dtype"/> (a zero block for each part without an adapter).</summary>
    private static Tensor UpFactors(GroupPlan plan, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        if (plan.Parts.Count == 1)
        {
            return plan.Adapters[0].B.to(dtype).MoveToOuterDisposeScope();
        }
        var device = plan.Adapters[0].B.device;
        var blocks = plan.Parts.Select(p => p is LoraLinear l ? (Tensor)l.B : zeros([p.OutFeatures, 0], ScalarType.Float32, device)).ToArray();
        return block_diag(blocks).to(dtype).MoveToOuterDisposeScope();
    }

    /// <summary><c>x·Wᵀ + b</c> of the bases, <c>[N, Σ out]</c>: one GEMM on the fused weight, else one per base into its columns.</summary>
    private static Tensor BaseForward(GroupPlan plan, Tensor x)
    {
        using var scope = NewDisposeScope();
        if (plan.Weight is { } weight)
        {
            return nn.functional.linear(x, weight, plan.Bias).MoveToOuterDisposeScope();
        }
        if (plan.Bases.Length == 1)
        {
            return plan.Bases[0] is PackedQuantizedLinear packed ? packed.Linear(x).MoveToOuterDisposeScope() : plan.Bases[0].forward(x).MoveToOuterDisposeScope();
        }
        var output = empty([x.shape[0], plan.OutFeatures], x.dtype, x.device);
        var column = 0L;
        foreach (var part in plan.Bases)
        {
            using (var partScope = NewDisposeScope())
            {
                // One dense (dequantized) weight at a time; beta 0 ignores the uninitialized columns.
                var w = part.DenseWeight(x.dtype);
                var slice = output.narrow(1, column, part.OutFeatures);
                slice.addmm_(x, w.t(), 0, 1);
                if (part.DenseBias(x.dtype) is { } bias)
                {
                    slice.add_(bias, Scalars.One);
                }
            }
            column += part.OutFeatures;
        }
        return output.MoveToOuterDisposeScope();
    }

    /// <summary><c>grad·W</c> of the bases, <c>[N, in]</c> for <paramref name="grad"/> <c>[N, Σ out]</c>.</summary>
    public static Tensor BaseInputGradient(GroupPlan plan, Tensor grad)
    {
        using var scope = NewDisposeScope();
        if (plan.Weight is { } weight)
        {
            return grad.mm(weight).MoveToOuterDisposeScope();
        }
        Tensor? result = null;
        var column = 0L;
        foreach (var part in plan.Bases)
        {
            using (var partScope = NewDisposeScope())
            {
                var w = part.DenseWeight(grad.dtype);
                var slice = grad.narrow(1, column, part.OutFeatures);
                if (result is null)
                {
                    result = slice.mm(w).MoveToOuterDisposeScope();
                }
                else
                {
                    result.addmm_(slice, w, 1, 1);
                }
            }
            column += part.OutFeatures;
        }
        return result!.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// The autograd node of a <see cref="LoraProjectionGroup"/> call: inputs x, the plan, the masks, then A and B of each
/// adapter. Saves x, the bool masks, the cast factors and the <c>[N, G·r]</c> down-projections (as <see cref="LoraDelta"/>,
/// the dropped-out inputs are recomputed, not kept). Backward: <c>dX = dY·W + Σ mask ⊙ (s·dY·B)·A</c>,
/// <c>dA = (s·dY·B)ᵀ·(mask ⊙ x)</c>, <c>dB = dYᵀ·(s·mask ⊙ x·Aᵀ)</c> per adapter.
/// </summary>
public sealed class LoraGroupFunction : autograd.SingleTensorFunction<LoraGroupFunction>
{
    public override string Name => "LowbitLoraGroup";

    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var input = (Tensor)vars[0];
        var plan = (GroupPlan)vars[1];
        var mask = vars[2] as Tensor;
        var saved = new List<Tensor>();
        using var scope = NewDisposeScope();
        var output = GroupMath.Forward(plan, input, mask, saved);
        foreach (var t in saved)
        {
            t.MoveToOuterDisposeScope();
        }
        // The mask last: TorchSharp drops a null from the saved list.
        ctx.save_for_backward(mask is null ? [input, .. saved] : [input, .. saved, mask]);
        ctx.save_data("plan", plan);
        return output.MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor grad_output)
    {
        Training.GradientCheckpoint.ReleaseReturned();
        var plan = (GroupPlan)ctx.get_data("plan");
        var adapters = plan.Adapters;
        var settings = adapters[0].Settings;
        var rank = settings.R;
        var groups = adapters.Length;
        var factor = settings.Dropout > 0 ? settings.Scaling / (1.0 - settings.Dropout) : settings.Scaling;
        var result = new List<Tensor>(3 + 2 * groups) { null!, null!, null! };
        using (var scope = NewDisposeScope())
        {
            var saved = ctx.get_saved_variables();
            var (input, a, b, down) = (saved[0], saved[1], saved[2], saved[3]);
            var mask = saved.Count > 4 && !saved[4].IsInvalid ? saved[4] : null;
            var inFeatures = input.shape[^1];
            var x = input.reshape(-1, inFeatures);
            var rows = x.shape[0];
            var grad = grad_output.reshape(rows, -1);
            var gradX = GroupMath.BaseInputGradient(plan, grad);
            var gradDown = grad.mm(b).mul_(Scalars.Of(factor));   // [N, G·r]
            Tensor gradA;
            if (mask is null)
            {
                gradX.addmm_(gradDown, a, 1, 1);
                gradA = gradDown.t().mm(x);   // [G·r, in]
            }
            else if (groups == 1)
            {
                gradX.add_(gradDown.mm(a).mul_(mask), Scalars.One);
                gradA = gradDown.t().mm(mask.mul(x));   // [r, in]
            }
            else
            {
                var perAdapter = gradDown.view(rows, groups, rank).transpose(0, 1);   // [G, N, r]
                using (var gradDropped = perAdapter.bmm(a).mul_(mask))   // [G, N, in], freed before the next one
                {
                    gradX.add_(gradDropped.sum([0L]), Scalars.One);
                }
                gradA = perAdapter.transpose(1, 2).bmm(mask.mul(x)).view(groups * rank, inFeatures);
            }
            result[0] = gradX.view(input.shape).MoveToOuterDisposeScope();
            var column = 0L;
            var index = 0;
            foreach (var part in plan.Parts)
            {
                if (part is LoraLinear lora)
                {
                    result.Add(gradA.narrow(0, index * rank, rank).to(ScalarType.Float32).MoveToOuterDisposeScope());   // rows of a contiguous tensor: contiguous
                    var gradB = grad.narrow(1, column, part.OutFeatures).t().mm(down.narrow(1, index * rank, rank));
                    result.Add(gradB.to(ScalarType.Float32).MoveToOuterDisposeScope());
                    index++;
                }
                column += part.OutFeatures;
            }
        }
        // On CUDA this runs on the autograd device thread outside any dispose scope (see GradientCheckpoint.backward).
        grad_output.Dispose();
        var owner = adapters[0].Owner;
        foreach (var t in result.Where(t => t is not null))
        {
            if (owner is not null)
            {
                Training.GradientCheckpoint.Returned(owner, t);
            }
            else
            {
                Training.GradientCheckpoint.Returned(t);
            }
        }
        return result;
    }
}
