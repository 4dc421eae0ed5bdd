using System.Globalization;

namespace Lowbit.Operator.Telemetry;

/// <summary>One sample of a Prometheus text exposition: series name, labels, value and the optional timestamp (ms since the epoch).</summary>
public sealed record PrometheusSample(string Name, IReadOnlyDictionary<string, string> Labels, double Value, long? TimestampMs = null);

/// <summary>What a parse found: the samples kept and how many lines were not valid samples (skipped).</summary>
public sealed record PrometheusParseResult(IReadOnlyList<PrometheusSample> Samples, int MalformedLines);

/// <summary>
/// A parser for the Prometheus text exposition format 0.0.4 (what vLLM, llama.cpp and prometheus-net serve):
/// <c>name{label="value",...} value [timestamp]</c> lines, <c># HELP</c>/<c># TYPE</c> and other comments
/// ignored, label values with <c>\\</c>, <c>\"</c> and <c>\n</c> escapes, values <c>NaN</c>, <c>+Inf</c>,
/// <c>-Inf</c>, optional integer timestamps, <c>\n</c> or <c>\r\n</c> line ends. It never throws on input: a line
/// that is not a valid sample is counted in <see cref="PrometheusParseResult.MalformedLines"/> and skipped.
/// </summary>
public static class PrometheusText
{
    private static readonly IReadOnlyDictionary<string, string> NoLabels = System.Collections.Frozen.FrozenDictionary<string, string>.Empty;

    /// <summary>Parses <paramref name="text"/>, keeping the samples whose series name <paramref name="keep"/> accepts (all when null).</summary>
    public static PrometheusParseResult Parse(string? text, Func<string, bool>? keep = null)
    {
        var samples = new List<PrometheusSample>();
        var malformed = 0;
        if (string.IsNullOrEmpty(text))
        {
            return new PrometheusParseResult(samples, 0);
        }

        var rest = text.AsSpan();
        while (rest.Length > 0)
        {
            var end = rest.IndexOf('\n');
            var line = end < 0 ? rest : rest[..end];
            rest = end < 0 ? [] : rest[(end + 1)..];
            switch (ParseLine(line, keep, out var sample))
            {
                case LineKind.Sample:
                    samples.Add(sample!);
                    break;
                case LineKind.Malformed:
                    malformed++;
                    break;
            }
        }

        return new PrometheusParseResult(samples, malformed);
    }

    private enum LineKind
    {
        Ignored,
        Sample,
        Malformed,
    }

    private static LineKind ParseLine(ReadOnlySpan<char> line, Func<string, bool>? keep, out PrometheusSample? sample)
    {
        sample = null;
        line = line.Trim(" \t\r");
        if (line.IsEmpty || line[0] == '#')
        {
            return LineKind.Ignored;
        }

        var nameLength = 0;
        while (nameLength < line.Length && IsNameChar(line[nameLength], nameLength == 0))
        {
            nameLength++;
        }

        if (nameLength == 0 || (nameLength < line.Length && line[nameLength] is not ('{' or ' ' or '\t')))
        {
            return LineKind.Malformed;
        }

        var name = line[..nameLength].ToString();
        if (keep is not null && !keep(name))
        {
            return LineKind.Ignored;
        }

        var pos = nameLength;
        SkipBlanks(line, ref pos);
        var labels = NoLabels;
        if (pos < line.Length && line[pos] == '{')
        {
            if (!TryParseLabels(line, ref pos, out var parsed))
            {
                return LineKind.Malformed;
            }

            labels = parsed;
        }

        var fields = line[pos..].Trim(" \t");
        var gap = fields.IndexOfAny(' ', '\t');
        var valueText = gap < 0 ? fields : fields[..gap];
        var timestampText = gap < 0 ? [] : fields[gap..].Trim(" \t");
        if (!TryParseValue(valueText, out var value))
        {
            return LineKind.Malformed;
        }

        long? timestamp = null;
        if (!timestampText.IsEmpty)
        {
            if (!long.TryParse(timestampText, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var ms))
            {
                return LineKind.Malformed;
            }

            timestamp = ms;
        }

        sample = new PrometheusSample(name, labels, value, timestamp);
        return LineKind.Sample;
    }

    /// <summary>Parses <c>{a="x",b="y",}</c> starting at the brace; <paramref name="pos"/> ends after the closing brace.</summary>
    private static bool TryParseLabels(ReadOnlySpan<char> line, ref int pos, out Dictionary<string, string> labels)
    {
        labels = new Dictionary<string, string>(StringComparer.Ordinal);
        pos++;
        while (true)
        {
            SkipBlanks(line, ref pos);
            if (pos >= line.Length)
            {
                return false;
            }

            if (line[pos] == '}')
            {
                pos++;
                return true;
            }

            var start = pos;
            while (pos < line.Length && IsLabelNameChar(line[pos], pos == start))
            {
                pos++;
            }

            if (pos == start)
            {
                return false;
            }

            var labelName = line[start..pos].ToString();
            SkipBlanks(line, ref pos);
            if (pos >= line.Length || line[pos] != '=')
            {
                return false;
            }

            pos++;
            SkipBlanks(line, ref pos);
            if (pos >= line.Length || line[pos] != '"' || !TryParseQuoted(line, ref pos, out var labelValue))
            {
                return false;
            }

            labels[labelName] = labelValue;
            SkipBlanks(line, ref pos);
            if (pos < line.Length && line[pos] == ',')
            {
                pos++;
            }
            else if (pos >= line.Length || line[pos] != '}')
            {
                return false;
            }
        }
    }

    /// <summary>A quoted label value starting at the opening quote, with the format's three escapes.</summary>
    private static bool TryParseQuoted(ReadOnlySpan<char> line, ref int pos, out string value)
    {
        value = "";
        var builder = new System.Text.StringBuilder();
        pos++;
        while (pos < line.Length)
        {
            var c = line[pos++];
            if (c == '"')
            {
                value = builder.ToString();
                return true;
            }

            if (c != '\\')
            {
                builder.Append(c);
                continue;
            }

            if (pos >= line.Length)
            {
                return false;
            }

            switch (line[pos++])
            {
                case 'n':
                    builder.Append('\n');
                    break;
                case var quotedOrBackslash and ('\\' or '"'):
                    builder.Append(quotedOrBackslash);
                    break;
                case var other:
                    // Not one of the three escapes: kept as written, backslash included.
                    builder.Append('\\').Append(other);
                    break;
            }
        }

        return false;
    }

    /// <summary>A float as Go's ParseFloat reads it here: decimal or exponent notation, <c>NaN</c>, <c>+Inf</c>, <c>-Inf</c>, <c>Inf</c>.</summary>
    private static bool TryParseValue(ReadOnlySpan<char> text, out double value)
    {
        value = 0;
        if (text.IsEmpty)
        {
            return false;
        }

        var unsigned = text[0] is '+' or '-' ? text[1..] : text;
        if (unsigned.Equals("Inf", StringComparison.OrdinalIgnoreCase) || unsigned.Equals("Infinity", StringComparison.OrdinalIgnoreCase))
        {
            value = text[0] == '-' ? double.NegativeInfinity : double.PositiveInfinity;
            return true;
        }

        if (text.Equals("NaN", StringComparison.OrdinalIgnoreCase))
        {
            value = double.NaN;
            return true;
        }

        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
    }

    private static void SkipBlanks(ReadOnlySpan<char> line, ref int pos)
    {
        while (pos < line.Length && line[pos] is ' ' or '\t')
        {
            pos++;
        }
    }

    private static bool IsNameChar(char c, bool first) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or '_' or ':' || (!first && c is >= '0' and <= '9');

    private static bool IsLabelNameChar(char c, bool first) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or '_' || (!first && c is >= '0' and <= '9');
}
