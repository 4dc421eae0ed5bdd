using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Quantization;

/// <summary>Deterministic weight-like matrices: normal with a sprinkling of large outliers, like real LLM weights.</summary>
internal static class TestMatrices
{
    public static Tensor WeightLike(long rows, long cols, long seed = 7, double std = 0.02)
    {
        using var scope = torch.NewDisposeScope();
        var gen = new torch.Generator((ulong)seed);
        var w = torch.randn(rows, cols, generator: gen).mul(Scalars.Of(std));
        // ~0.1% outliers at 10x the spread, as real attention/MLP weights show.
        var mask = torch.rand(rows, cols, generator: gen).lt(Scalars.Of(0.001));
        w = torch.where(mask, w.mul(Scalars.Of(10)), w);
        return w.MoveToOuterDisposeScope();
    }

    public static double RelativeError(Tensor reference, Tensor approx)
    {
        using var scope = torch.NewDisposeScope();
        return reference.sub(approx).norm().item<float>() / reference.norm().item<float>();
    }
}
