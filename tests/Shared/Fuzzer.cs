using System.Diagnostics;

namespace Lowbit.Testing;

/// <summary>
/// A seeded mutation fuzzer for parsers of outside input: each case is a valid seed input with 1–4 random edits
/// (bit flips, boundary bytes, huge little-endian integers over length fields, truncation, insertion, deletion,
/// duplication). Case <c>i</c> of seed <c>s</c> is always the same bytes, so a failure names what reproduces it.
/// A case passes when the parser returns or throws one of its named errors; any other exception, or no answer
/// within <see cref="HangLimit"/>, fails with the seed and case number.
/// </summary>
public static class Fuzzer
{
    /// <summary>How long one input may take before it counts as a hang.</summary>
    public static readonly TimeSpan HangLimit = TimeSpan.FromSeconds(10);

    /// <summary>Total time per fuzz target (CI budget); the cases run are a prefix of the deterministic sequence.</summary>
    public static readonly TimeSpan Budget = TimeSpan.FromSeconds(3);

    private static readonly byte[] Boundary = [0x00, 0x01, 0x7F, 0x80, 0xFF, (byte)'"', (byte)'{', (byte)'}', (byte)'[', (byte)':', (byte)'\n', (byte)'\\'];
    private static readonly ulong[] BigIntegers = [0, 1, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 1UL << 40];

    /// <summary>Mutation <paramref name="index"/> of <paramref name="seedInput"/> under <paramref name="seed"/>.</summary>
    public static byte[] Mutate(byte[] seedInput, int seed, int index)
    {
        // Not HashCode.Combine: it is randomized per process, so a failing case would not reproduce.
        var random = new Random(unchecked((seed * 1_000_003) ^ (index * 7_919) ^ 0x5bd1e995));
        var data = new List<byte>(seedInput);
        var edits = random.Next(1, 5);
        for (var e = 0; e < edits; e++)
        {
            var at = data.Count == 0 ? 0 : random.Next(data.Count);
            switch (random.Next(8))
            {
                case 0 when data.Count > 0:
                    data[at] ^= (byte)(1 << random.Next(8));
                    break;
                case 1 when data.Count > 0:
                    data[at] = Boundary[random.Next(Boundary.Length)];
                    break;
                case 2 when data.Count >= 8:
                    var value = BigIntegers[random.Next(BigIntegers.Length)];
                    var width = random.Next(2) == 0 ? 4 : 8;
                    at = Math.Min(at, data.Count - width);
                    for (var b = 0; b < width; b++)
                    {
                        data[at + b] = (byte)(value >> (8 * b));
                    }
                    break;
                case 3:
                    data.RemoveRange(at, data.Count - at);
                    break;
                case 4:
                    var insert = new byte[random.Next(1, 16)];
                    random.NextBytes(insert);
                    data.InsertRange(at, insert);
                    break;
                case 5 when data.Count > 0:
                    data.RemoveRange(at, Math.Min(random.Next(1, 64), data.Count - at));
                    break;
                case 6 when data.Count > 0:
                    var length = Math.Min(random.Next(1, 128), data.Count - at);
                    data.InsertRange(random.Next(data.Count), data.GetRange(at, length));
                    break;
                default:
                    data.Insert(at, Boundary[random.Next(Boundary.Length)]);
                    break;
            }
        }
        return data.ToArray();
    }

    /// <summary>Runs up to <paramref name="cases"/> mutations of <paramref name="seedInput"/> through <paramref name="parse"/>
    /// within <see cref="Budget"/>; returns the number of cases run. <paramref name="isNamedError"/> says which exceptions are
    /// the parser's documented, named errors (their message must not be empty).</summary>
    public static int Run(byte[] seedInput, int seed, Action<byte[]> parse, Func<Exception, bool> isNamedError, int cases = 5000)
    {
        var clock = Stopwatch.StartNew();
        var run = 0;
        for (var i = 0; i < cases && (i < 50 || clock.Elapsed < Budget); i++, run++)
        {
            var input = Mutate(seedInput, seed, i);
            var task = Task.Run(() => parse(input));
            try
            {
                if (!task.Wait(HangLimit))
                {
                    throw new Xunit.Sdk.XunitException($"fuzz seed {seed} case {i}: no answer within {HangLimit.TotalSeconds} s (hang); input {Convert.ToBase64String(input)}");
                }
            }
            catch (AggregateException aggregate) when (aggregate.InnerException is { } ex)
            {
                if (!isNamedError(ex) || string.IsNullOrWhiteSpace(ex.Message))
                {
                    throw new Xunit.Sdk.XunitException($"fuzz seed {seed} case {i}: {ex.GetType().Name}: {ex.Message}\ninput {Convert.ToBase64String(input)}\n{ex}");
                }
            }
        }
        return run;
    }
}
