using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests;

public class TorchRuntimeTests
{
    [Fact]
    public void Does_multiply_matrices_when_libtorch_is_loaded()
    {
        using var scope = NewDisposeScope();
        var a = tensor(new float[] { 1, 2, 3, 4, 5, 6 }, [2, 3]);
        var b = tensor(new float[] { 7, 8, 9, 10, 11, 12 }, [3, 2]);

        var c = matmul(a, b);

        Assert.Equal([58f, 64f, 139f, 154f], c.data<float>().ToArray());
    }
}
