using System.Globalization;

namespace Lowbit.Engine.Protocol;

/// <summary>Builds a verb's argument list: the verb first, then <c>--kebab-flag value</c> pairs; nulls are left out.</summary>
internal sealed class ArgumentWriter
{
    private readonly List<string> _args;

    public ArgumentWriter(string verb) => _args = [verb];

    public ArgumentWriter Add(string flag, string? value)
    {
        if (value is not null)
        {
            _args.Add(flag);
            _args.Add(value);
        }
        return this;
    }

    public ArgumentWriter Add(string flag, int? value) =>
        Add(flag, value?.ToString(CultureInfo.InvariantCulture));

    public ArgumentWriter Add(string flag, long? value) =>
        Add(flag, value?.ToString(CultureInfo.InvariantCulture));

    public ArgumentWriter Add(string flag, double? value) =>
        Add(flag, value?.ToString("R", CultureInfo.InvariantCulture));

    /// <summary>Booleans are written only when true (<c>--flag true</c>); false is the default of every boolean flag.</summary>
    public ArgumentWriter Add(string flag, bool value) => value ? Add(flag, "true") : this;

    public ArgumentWriter Add<TEnum>(string flag, TEnum? value)
        where TEnum : struct, Enum =>
        Add(flag, value is { } v ? ProtocolNames.Of(v) : null);

    public ArgumentWriter Add(string flag, IReadOnlyList<string> values) =>
        values.Count == 0 ? this : Add(flag, string.Join(',', values));

    public IReadOnlyList<string> Build() => _args.ToArray();
}

/// <summary>Reads a verb's argument list strictly: the verb first, known flags only, each at most once, each with a value.</summary>
internal sealed class ArgumentReader
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);

    public ArgumentReader(string verb, IReadOnlyList<string> args, IReadOnlyList<string> flags)
    {
        ArgumentNullException.ThrowIfNull(args);
        if (args.Count == 0 || args[0] != verb)
        {
            throw new ProtocolArgumentException("verb", $"expected '{verb}' first, got '{(args.Count == 0 ? "" : args[0])}'", verb);
        }
        for (var i = 1; i < args.Count; i++)
        {
            var flag = args[i];
            if (!flags.Contains(flag))
            {
                throw new ProtocolArgumentException(flag, $"unknown argument for '{verb}'", string.Join(", ", flags));
            }
            if (i + 1 >= args.Count || args[i + 1].StartsWith("--", StringComparison.Ordinal))
            {
                throw new ProtocolArgumentException(flag, "missing value", Describe(flag));
            }
            if (!_values.TryAdd(flag, args[++i]))
            {
                throw new ProtocolArgumentException(flag, "given more than once", "one value");
            }
        }
    }

    private static string Describe(string flag) => $"a value after {flag}";

    public string Required(string flag, string accepted) =>
        Optional(flag) is { Length: > 0 } value
            ? value
            : throw new ProtocolArgumentException(flag, "required", accepted);

    public string? Optional(string flag) => _values.GetValueOrDefault(flag);

    public int? Int(string flag, int min, int max)
    {
        if (Optional(flag) is not { } text)
        {
            return null;
        }
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
        {
            throw new ProtocolArgumentException(flag, $"'{text}' is not valid", $"an integer from {min} to {max}");
        }
        return value;
    }

    public int? Int(string flag, IReadOnlyList<int> allowed)
    {
        if (Optional(flag) is not { } text)
        {
            return null;
        }
        if (!int.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || !allowed.Contains(value))
        {
            throw new ProtocolArgumentException(flag, $"'{text}' is not valid", string.Join(", ", allowed));
        }
        return value;
    }

    public long? Long(string flag, long min, long max)
    {
        if (Optional(flag) is not { } text)
        {
            return null;
        }
        if (!long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var value) || value < min || value > max)
        {
            throw new ProtocolArgumentException(flag, $"'{text}' is not valid", $"an integer from {min} to {max}");
        }
        return value;
    }

    public double? Double(string flag, double min, double max)
    {
        if (Optional(flag) is not { } text)
        {
            return null;
        }
        if (!double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value)
            || !double.IsFinite(value) || value < min || value > max)
        {
            throw new ProtocolArgumentException(flag, $"'{text}' is not valid",
                $"a number from {min.ToString(CultureInfo.InvariantCulture)} to {max.ToString(CultureInfo.InvariantCulture)}");
        }
        return value;
    }

    /// <summary><c>true</c> or <c>false</c>; absent is false.</summary>
    public bool Bool(string flag) => Optional(flag) switch
    {
        null or "false" => false,
        "true" => true,
        var text => throw new ProtocolArgumentException(flag, $"'{text}' is not valid", "true or false"),
    };

    public TEnum? Enum<TEnum>(string flag)
        where TEnum : struct, Enum
    {
        if (Optional(flag) is not { } text)
        {
            return null;
        }
        return ProtocolNames.TryParse<TEnum>(text, out var value)
            ? value
            : throw new ProtocolArgumentException(flag, $"'{text}' is not valid", ProtocolNames.Accepted<TEnum>());
    }

    public ValueList<string> List(string flag, IReadOnlyList<string>? allowed = null, bool allowRepeats = false)
    {
        if (Optional(flag) is not { } text)
        {
            return ValueList<string>.Empty;
        }
        var items = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (items.Length == 0)
        {
            throw new ProtocolArgumentException(flag, "empty list", allowed is null ? "a comma-separated list" : string.Join(", ", allowed));
        }
        if (allowed is not null && items.FirstOrDefault(i => !allowed.Contains(i)) is { } bad)
        {
            throw new ProtocolArgumentException(flag, $"'{bad}' is not valid", string.Join(", ", allowed));
        }
        if (!allowRepeats && items.Distinct(StringComparer.Ordinal).Count() != items.Length)
        {
            throw new ProtocolArgumentException(flag, $"'{text}' repeats a value", "each value at most once");
        }
        return new ValueList<string>(items);
    }
}

/// <summary>Command-line spellings of the protocol's enums: the member name in lower case (<c>Qlora</c> → <c>qlora</c>).</summary>
public static class ProtocolNames
{
    public static string Of<TEnum>(TEnum value)
        where TEnum : struct, Enum => value.ToString().ToLowerInvariant();

    public static bool TryParse<TEnum>(string text, out TEnum value)
        where TEnum : struct, Enum
    {
        foreach (var candidate in System.Enum.GetValues<TEnum>())
        {
            if (Of(candidate) == text)
            {
                value = candidate;
                return true;
            }
        }
        value = default;
        return false;
    }

    public static string Accepted<TEnum>()
        where TEnum : struct, Enum => string.Join(", ", System.Enum.GetValues<TEnum>().Select(Of));
}
