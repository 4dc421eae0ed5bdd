namespace Lowbit.LocalCluster.Store;

/// <summary>
/// A parsed label selector as in <c>?labelSelector=</c>: <c>a=b</c>, <c>a==b</c>, <c>a!=b</c>,
/// <c>a in (x,y)</c>, <c>a notin (x,y)</c>, <c>a</c> (exists), <c>!a</c> (does not exist), comma-separated (AND).
/// </summary>
public sealed class LabelSelector
{
    private enum Op
    {
        Equals,
        NotEquals,
        In,
        NotIn,
        Exists,
        DoesNotExist,
    }

    private sealed record Requirement(string Key, Op Op, IReadOnlyList<string> Values);

    private readonly IReadOnlyList<Requirement> _requirements;

    private LabelSelector(IReadOnlyList<Requirement> requirements) => _requirements = requirements;

    public static LabelSelector Everything { get; } = new([]);

    public bool IsEmpty => _requirements.Count == 0;

    /// <exception cref="ApiException">400 BadRequest naming the bad part.</exception>
    public static LabelSelector Parse(string? text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return Everything;
        }
        var requirements = new List<Requirement>();
        foreach (var part in SplitTopLevel(text))
        {
            var term = part.Trim();
            if (term.Length == 0)
            {
                continue;
            }
            requirements.Add(ParseTerm(term));
        }
        return new LabelSelector(requirements);
    }

    public bool Matches(IReadOnlyDictionary<string, string> labels)
    {
        foreach (var r in _requirements)
        {
            var has = labels.TryGetValue(r.Key, out var value);
            var ok = r.Op switch
            {
                Op.Equals => has && value == r.Values[0],
                Op.NotEquals => !has || value != r.Values[0],
                Op.In => has && r.Values.Contains(value!),
                Op.NotIn => !has || !r.Values.Contains(value!),
                Op.Exists => has,
                Op.DoesNotExist => !has,
                _ => false,
            };
            if (!ok)
            {
                return false;
            }
        }
        return true;
    }

    private static Requirement ParseTerm(string term)
    {
        if (term.StartsWith('!'))
        {
            return new Requirement(CheckKey(term[1..].Trim(), term), Op.DoesNotExist, []);
        }
        var setMatch = System.Text.RegularExpressions.Regex.Match(term, @"^(\S+)\s+(in|notin)\s*\((.*)\)$");
        if (setMatch.Success)
        {
            var values = setMatch.Groups[3].Value.Split(',').Select(v => v.Trim()).Where(v => v.Length > 0).ToArray();
            return new Requirement(CheckKey(setMatch.Groups[1].Value, term), setMatch.Groups[2].Value == "in" ? Op.In : Op.NotIn, values);
        }
        foreach (var (token, op) in new[] { ("!=", Op.NotEquals), ("==", Op.Equals), ("=", Op.Equals) })
        {
            var at = term.IndexOf(token, StringComparison.Ordinal);
            if (at > 0)
            {
                return new Requirement(CheckKey(term[..at].Trim(), term), op, [term[(at + token.Length)..].Trim()]);
            }
        }
        return new Requirement(CheckKey(term, term), Op.Exists, []);
    }

    private static string CheckKey(string key, string term)
    {
        if (key.Length == 0 || key.Any(c => char.IsWhiteSpace(c) || c is '(' or ')' or ',' or '=' or '!'))
        {
            throw ApiException.BadRequest($"unable to parse requirement: invalid label selector term \"{term}\" (accepted: key, !key, key=value, key==value, key!=value, key in (v1,v2), key notin (v1,v2))");
        }
        return key;
    }

    private static IEnumerable<string> SplitTopLevel(string text)
    {
        var depth = 0;
        var start = 0;
        for (var i = 0; i < text.Length; i++)
        {
            switch (text[i])
            {
                case '(':
                    depth++;
                    break;
                case ')':
                    depth--;
                    break;
                case ',' when depth == 0:
                    yield return text[start..i];
                    start = i + 1;
                    break;
            }
        }
        yield return text[start..];
    }
}

/// <summary>
/// A parsed field selector: <c>metadata.name</c>, <c>metadata.namespace</c> for every resource, plus
/// <c>spec.nodeName</c> and <c>status.phase</c> for pods (and <c>status.phase</c> for namespaces);
/// operators <c>=</c>, <c>==</c>, <c>!=</c>.
/// </summary>
public sealed class FieldSelector
{
    private sealed record Requirement(string Field, bool Equal, string Value);

    private readonly IReadOnlyList<Requirement> _requirements;

    private FieldSelector(IReadOnlyList<Requirement> requirements) => _requirements = requirements;

    public static FieldSelector Everything { get; } = new([]);

    /// <summary>The name this selector pins with <c>metadata.name=x</c>, if any (lets lists skip a scan).</summary>
    public string? PinnedName => _requirements.FirstOrDefault(r => r.Field == "metadata.name" && r.Equal)?.Value;

    public static FieldSelector Parse(string? text, ResourceType type)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return Everything;
        }
        var requirements = new List<Requirement>();
        foreach (var raw in text.Split(','))
        {
            var term = raw.Trim();
            if (term.Length == 0)
            {
                continue;
            }
            var (field, equal, value) = term.Contains("!=", StringComparison.Ordinal)
                ? (term[..term.IndexOf("!=", StringComparison.Ordinal)], false, term[(term.IndexOf("!=", StringComparison.Ordinal) + 2)..])
                : term.Contains("==", StringComparison.Ordinal)
                    ? (term[..term.IndexOf("==", StringComparison.Ordinal)], true, term[(term.IndexOf("==", StringComparison.Ordinal) + 2)..])
                    : term.Contains('=', StringComparison.Ordinal)
                        ? (term[..term.IndexOf('=', StringComparison.Ordinal)], true, term[(term.IndexOf('=', StringComparison.Ordinal) + 1)..])
                        : throw ApiException.BadRequest($"invalid field selector \"{term}\": expected field=value, field==value or field!=value");
            field = field.Trim();
            var isEvent = type.Kind == "Event";
            var supported = field is "metadata.name" or "metadata.namespace"
                || (type.Kind == "Pod" && type.Group.Length == 0 && field is "spec.nodeName" or "status.phase")
                || (type.Kind == "Namespace" && field == "status.phase")
                || (type.Kind == "Secret" && field == "type")
                || (isEvent && (field.StartsWith("involvedObject.", StringComparison.Ordinal) || field.StartsWith("regarding.", StringComparison.Ordinal)
                    || field is "reason" or "type" or "source" or "reportingComponent" or "reportingController"));
            if (!supported)
            {
                throw ApiException.BadRequest($"field label not supported: {field} (accepted for {type.GroupResource}: metadata.name, metadata.namespace{(type.Kind == "Pod" ? ", spec.nodeName, status.phase" : isEvent ? ", involvedObject.*, regarding.*, reason, type, source" : "")})");
            }
            requirements.Add(new Requirement(field, equal, value.Trim()));
        }
        return new FieldSelector(requirements);
    }

    public bool Matches(StoredObject obj)
    {
        System.Text.Json.Nodes.JsonObject? parsed = null;
        foreach (var r in _requirements)
        {
            var actual = r.Field switch
            {
                "metadata.name" => obj.Name,
                "metadata.namespace" => obj.Namespace,
                "spec.nodeName" => obj.NodeName ?? "",
                "status.phase" => obj.Phase ?? "",
                _ => Lookup(parsed ??= obj.ToJsonObject(), r.Field),
            };
            if ((actual == r.Value) != r.Equal)
            {
                return false;
            }
        }
        return true;
    }

    private static string Lookup(System.Text.Json.Nodes.JsonObject obj, string path)
    {
        System.Text.Json.Nodes.JsonNode? node = obj;
        foreach (var part in path.Split('.'))
        {
            node = (node as System.Text.Json.Nodes.JsonObject)?[part];
        }
        return node switch
        {
            null => "",
            System.Text.Json.Nodes.JsonValue v => v.ToString(),
            _ => "",
        };
    }
}
