using TorchSharp;

namespace Lowbit.Engine;

/// <summary>
/// Numbers passed to TorchSharp as <see cref="Scalar"/>s, kept alive until the native call has used them. TorchSharp's
/// implicit number → Scalar conversion makes a temporary that nothing references once its raw handle is read, so the
/// GC may finalize it, freeing the native scalar, while libtorch still reads it (TorchSharp PR #1434; seen here as
/// libtorch <c>Scalar.h</c> assertions in whichever thread ran: training, HQQ, the serve scheduler). <see cref="Of(double)"/>
/// keeps the last <see cref="Kept"/> scalars of the calling thread reachable and disposes each when its slot is reused,
/// on the same thread: native calls are synchronous, so the call that took it has returned by then.
/// <c>tests/Lowbit.Architecture.Tests</c> fails on any implicit conversion left in the engine.
/// </summary>
public static class Scalars
{
    private const int Kept = 64;

    [ThreadStatic]
    private static Scalar?[]? _ring;

    [ThreadStatic]
    private static int _next;

    /// <summary>
    /// 1, for the <c>alpha</c> of <c>x.add(y, Scalars.One)</c>: TorchSharp 0.107's <c>x + y</c> and <c>x.add(y)</c> pass
    /// an unheld temporary <c>alpha = 1</c> themselves. Never disposed; libtorch only reads it, from any thread.
    /// </summary>
    public static Scalar One { get; } = 1.ToScalar();

    public static Scalar Of(double value) => Keep(value.ToScalar());

    public static Scalar Of(float value) => Keep(value.ToScalar());

    public static Scalar Of(long value) => Keep(value.ToScalar());

    public static Scalar Of(int value) => Keep(value.ToScalar());

    public static Scalar Of(bool value) => Keep(value.ToScalar());

    private static Scalar Keep(Scalar scalar)
    {
        var ring = _ring ??= new Scalar?[Kept];
        ring[_next]?.Dispose();
        ring[_next] = scalar;
        _next = (_next + 1) % Kept;
        return scalar;
    }
}
