using Lowbit.Engine.Decoding;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class L2PlanTests
{
    private const long MB = 1 << 20;

    // A 7B layer's int4 g64 shapes, scaled down 16× in N: q/k/v 768 × 4096, output 256 × 4096, gate/up 1376 × 4096,
    // down 256 × 11008 (CPU tensors: the plan only reads shapes).
    private static Int4Weight Weight(long n, long k, int group = 64) => new()
    {
        Packed = zeros([n, k / 2], ScalarType.Byte),
        Scales = zeros([n, k / group], ScalarType.Float16),
        Zeros = zeros([n, k / group], ScalarType.Float16),
        GroupSize = group,
    };

    private static Int4Weight[] Layer() => [Weight(768, 4096), Weight(256, 4096), Weight(1376, 4096), Weight(256, 11008)];

    private static L2Slice[] At(L2Slice[][] plan, int layer, L2Plan.Issuer issuer) => plan[layer * L2Plan.IssuersPerLayer + (int)issuer];

    [Fact]
    public void Parses_budgets_per_kernel_and_none_for_zero_or_unset()
    {
        Assert.Null(L2Plan.ParseBudgets("0"));
        Assert.Null(L2Plan.ParseBudgets(null));
        Assert.Null(L2Plan.ParseBudgets("attention:0"));
        var budgets = L2Plan.ParseBudgets("attention:24, output:8,gate/up:0.5,down:8")!;
        Assert.Equal([0, 24 * MB, 8 * MB, MB / 2, 8 * MB], budgets);
    }

    [Theory]
    [InlineData("attention=24")]
    [InlineData("head:8")]
    [InlineData("attention:-1")]
    [InlineData("attention:lots")]
    public void Rejects_a_malformed_spec_naming_the_variable_and_the_form(string spec)
    {
        var error = Assert.Throws<ArgumentException>(() => L2Plan.ParseBudgets(spec));
        Assert.Contains(L2Plan.Env, error.Message, StringComparison.Ordinal);
        Assert.Contains("attention:24,output:8", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Row_bytes_count_codes_scales_and_zeros()
    {
        using var w = Weight(10, 4096);
        Assert.Equal(2048 + (64 * 2 * 2), L2Plan.RowBytes(w));
    }

    [Fact]
    public void Attention_takes_the_whole_output_projection_then_the_first_gate_up_rows()
    {
        var layers = new[] { Layer(), Layer() };
        var o = layers[0][1];
        var oBytes = o.OutFeatures * L2Plan.RowBytes(o);
        var budgets = new long[] { 0, oBytes + (100 * L2Plan.RowBytes(layers[0][2])), 0, 0, 0 };

        var plan = L2Plan.Build(layers, budgets);

        var slices = At(plan, 0, L2Plan.Issuer.Attention);
        Assert.Equal(2, slices.Length);
        Assert.Same(o, slices[0].Weight);
        Assert.Equal((0L, 256L), (slices[0].FirstRow, slices[0].Rows));
        Assert.Same(layers[0][2], slices[1].Weight);
        Assert.Equal((0L, 100L), (slices[1].FirstRow, slices[1].Rows));
        Assert.Empty(At(plan, 0, L2Plan.Issuer.Qkv));
        Assert.Empty(At(plan, 0, L2Plan.Issuer.Output));
    }

    [Fact]
    public void Later_kernels_continue_where_earlier_ones_stopped_and_never_take_a_row_twice()
    {
        var layers = new[] { Layer(), Layer(), Layer() };
        var budgets = L2Plan.ParseBudgets("qkv:1,attention:4,output:2,gateup:3,down:2")!;

        var plan = L2Plan.Build(layers, budgets);

        var taken = new Dictionary<Int4Weight, List<(long First, long Rows)>>();
        foreach (var slices in plan)
        {
            Assert.True(slices.Length <= L2Slice.MaxPerLaunch);
            foreach (var s in slices)
            {
                Assert.True(s.Rows > 0 && s.FirstRow + s.Rows <= s.Weight.OutFeatures, $"{s.FirstRow}+{s.Rows} of {s.Weight.OutFeatures}");
                (taken.TryGetValue(s.Weight, out var list) ? list : taken[s.Weight] = []).Add((s.FirstRow, s.Rows));
            }
        }
        foreach (var ranges in taken.Values)
        {
            var sorted = ranges.OrderBy(r => r.First).ToList();
            for (var i = 1; i < sorted.Count; i++)
            {
                Assert.Equal(sorted[i - 1].First + sorted[i - 1].Rows, sorted[i].First);
            }
            Assert.Equal(0, sorted[0].First);
        }
        // q/k/v's 1 MB and the attention's 4 MB both start at the output projection (0.56 MB here): q/k/v takes all of it
        // and gate/up's first rows, the attention gate/up's next rows.
        var qkv = At(plan, 0, L2Plan.Issuer.Qkv);
        Assert.Equal(2, qkv.Length);
        Assert.Same(layers[0][1], qkv[0].Weight);
        Assert.Equal(layers[0][1].OutFeatures, qkv[0].Rows);
        var attention = At(plan, 0, L2Plan.Issuer.Attention);
        Assert.Same(layers[0][2], attention[0].Weight);
        Assert.Equal(qkv[1].Rows, attention[0].FirstRow);
        // The down projection prefetches the next layer's weights (past what the kernels before it took); the last
        // layer's has nothing after it.
        Assert.Contains(At(plan, 0, L2Plan.Issuer.Down)[0].Weight, layers[1]);
        Assert.Empty(At(plan, 2, L2Plan.Issuer.Down));
        foreach (var layer in layers.SelectMany(l => l))
        {
            layer.Dispose();
        }
    }

    [Fact]
    public void A_budget_larger_than_what_is_left_takes_at_most_two_slices()
    {
        var layers = new[] { Layer() };
        var plan = L2Plan.Build(layers, [0, 1024 * MB, MB, 0, 0]);

        var slices = At(plan, 0, L2Plan.Issuer.Attention);
        Assert.Equal(2, slices.Length);
        Assert.Equal(layers[0][1].OutFeatures, slices[0].Rows);
        Assert.Equal(layers[0][2].OutFeatures, slices[1].Rows);
        // The output projection's own prefetch starts past what the attention took: gate/up is all taken, so the
        // down projection's first MB.
        var output = Assert.Single(At(plan, 0, L2Plan.Issuer.Output));
        Assert.Same(layers[0][3], output.Weight);
        Assert.Equal(0, output.FirstRow);
        Assert.Equal((MB + L2Plan.RowBytes(layers[0][3]) - 1) / L2Plan.RowBytes(layers[0][3]), output.Rows);
    }
}
