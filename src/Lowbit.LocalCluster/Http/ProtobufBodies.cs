using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Http;

/// <summary>
/// Reads Kubernetes protobuf request bodies (<c>k8s\0</c> + runtime.Unknown{typeMeta, raw}), which kubectl's typed clients
/// send for <c>kubectl create deployment|job|service|role|quota|...</c>, into the JSON the rest of the server works on.
/// Decoding is driven by a schema table (<see cref="KubernetesProtoSchemas"/>): unknown field numbers are skipped, a kind
/// without a schema is 415 naming the kind, and a malformed body is 400 saying where it broke.
/// </summary>
internal static class ProtobufBodies
{
    private const long MinUnixSeconds = -62135596800;
    private const long MaxUnixSeconds = 253402300799;

    private static readonly UTF8Encoding Strict = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static ReadOnlySpan<byte> Magic => "k8s\0"u8;

    public static JsonObject Decode(ReadOnlyMemory<byte> body) => Decode(body, KubernetesProtoSchemas.Default);

    public static JsonObject Decode(ReadOnlyMemory<byte> body, ProtoSchemaSet schemas)
    {
        if (!body.Span.StartsWith(Magic))
        {
            throw ApiException.BadRequest("the protobuf body does not start with the Kubernetes envelope magic \"k8s\\0\"");
        }
        var (apiVersion, kind, raw) = ReadEnvelope(body[Magic.Length..]);
        var schema = schemas.Root(apiVersion, kind) ?? throw Unsupported(apiVersion, kind, schemas);
        var obj = new JsonObject { ["apiVersion"] = apiVersion, ["kind"] = kind };
        new Decoder(schemas, $"{apiVersion} {kind}".TrimStart()).Into(obj, raw, schema, "");
        return obj;
    }

    /// <summary>Decodes one message by schema name (for tests and for bodies that are not enveloped).</summary>
    public static JsonObject DecodeMessage(ReadOnlyMemory<byte> bytes, ProtoSchemaSet schemas, string message)
    {
        var obj = new JsonObject();
        new Decoder(schemas, message).Into(obj, bytes, schemas.Message(message), "");
        return obj;
    }

    private static (string ApiVersion, string Kind, ReadOnlyMemory<byte> Raw) ReadEnvelope(ReadOnlyMemory<byte> unknown)
    {
        const string where = "the runtime.Unknown envelope";
        string apiVersion = "", kind = "", encoding = "";
        ReadOnlyMemory<byte> raw = default;
        var reader = new ProtoWireReader(unknown, where);
        while (reader.TryRead(out var field))
        {
            if (field.WireType != ProtoWireReader.LengthDelimited)
            {
                continue;
            }
            switch (field.Number)
            {
                case 1:
                    var typeMeta = new ProtoWireReader(field.Bytes, where + " typeMeta");
                    while (typeMeta.TryRead(out var f))
                    {
                        if (f.WireType == ProtoWireReader.LengthDelimited && f.Number == 1)
                        {
                            apiVersion = Utf8(f.Bytes, where);
                        }
                        else if (f.WireType == ProtoWireReader.LengthDelimited && f.Number == 2)
                        {
                            kind = Utf8(f.Bytes, where);
                        }
                    }
                    break;
                case 2:
                    raw = field.Bytes;
                    break;
                case 3:
                    encoding = Utf8(field.Bytes, where);
                    break;
            }
        }
        if (kind.Length == 0)
        {
            throw ProtoWireReader.Malformed(where, "typeMeta.kind is empty, so the object's kind is unknown");
        }
        if (encoding.Length > 0)
        {
            throw new ApiException(415, "UnsupportedMediaType", $"the embedded API server does not read protobuf bodies with contentEncoding \"{encoding}\"; send the object uncompressed or as JSON");
        }
        return (apiVersion, kind, raw);
    }

    private static ApiException Unsupported(string apiVersion, string kind, ProtoSchemaSet schemas)
    {
        var known = string.Join(", ", schemas.RootNames.Select(r => r.Split(' ')[1]).Where(k => k != "DeleteOptions"));
        return new ApiException(415, "UnsupportedMediaType",
            $"the embedded API server cannot read a protobuf {kind} ({apiVersion}) body; it reads protobuf only for {known}. " +
            $"Send the {kind} as JSON or YAML instead, e.g. write it to a file and run `kubectl apply -f <file>`.");
    }

    private static string Utf8(ReadOnlyMemory<byte> bytes, string where)
    {
        try
        {
            return Strict.GetString(bytes.Span);
        }
        catch (DecoderFallbackException)
        {
            throw ProtoWireReader.Malformed(where, "a string field is not valid UTF-8");
        }
    }

    /// <summary>Walks one body against the schema set; <c>root</c> names the body in error messages.</summary>
    private sealed class Decoder(ProtoSchemaSet schemas, string root)
    {
        public void Into(JsonObject target, ReadOnlyMemory<byte> bytes, ProtoMessage message, string path)
        {
            var reader = new ProtoWireReader(bytes, Where(path));
            while (reader.TryRead(out var wire))
            {
                if (!message.Fields.TryGetValue(wire.Number, out var field))
                {
                    continue;
                }
                var fieldPath = field.Kind == ProtoKind.Inline ? path : Join(path, field.JsonName);
                switch (field.Shape)
                {
                    case ProtoShape.Single:
                        Single(target, field, wire, fieldPath);
                        break;
                    case ProtoShape.Repeated:
                        Repeated(target, field, wire, fieldPath);
                        break;
                    case ProtoShape.Map:
                        MapEntry(target, field, wire, fieldPath);
                        break;
                }
            }
        }

        private void Single(JsonObject target, ProtoField field, WireField wire, string path)
        {
            if (field.Kind == ProtoKind.Inline)
            {
                Into(target, Bytes(wire, field, path), schemas.Message(field.MessageType!), path);
                return;
            }
            if (field.Kind == ProtoKind.Message)
            {
                // A message field repeated on the wire merges into the first, as protobuf specifies.
                var existing = target[field.JsonName] as JsonObject;
                var nested = existing ?? [];
                Into(nested, Bytes(wire, field, path), schemas.Message(field.MessageType!), path);
                if (existing is null && (nested.Count > 0 || field.Pointer))
                {
                    target[field.JsonName] = nested;
                }
                return;
            }
            var value = Value(field, wire, path);
            if (value is null || (!field.Pointer && IsZero(field.Kind, (JsonValue)value)))
            {
                target.Remove(field.JsonName);
                return;
            }
            target[field.JsonName] = value;
        }

        private void Repeated(JsonObject target, ProtoField field, WireField wire, string path)
        {
            if (target[field.JsonName] is not JsonArray list)
            {
                list = [];
                target[field.JsonName] = list;
            }
            var element = $"{path}[{list.Count}]";
            if (wire.WireType == ProtoWireReader.LengthDelimited && field.Kind is ProtoKind.Int32 or ProtoKind.Int64 or ProtoKind.Bool)
            {
                foreach (var varint in ProtoWireReader.PackedVarints(wire.Bytes, Where(element)))
                {
                    list.Add(Scalar(field.Kind, varint));
                }
                return;
            }
            list.Add(field.Kind == ProtoKind.Message ? Message(field, wire, element) : Value(field, wire, element));
        }

        private void MapEntry(JsonObject target, ProtoField field, WireField wire, string path)
        {
            if (target[field.JsonName] is not JsonObject map)
            {
                map = [];
                target[field.JsonName] = map;
            }
            var key = "";
            JsonNode? value = null;
            var reader = new ProtoWireReader(Bytes(wire, field, path), Where(path));
            while (reader.TryRead(out var entry))
            {
                if (entry.Number == 1)
                {
                    key = Text(entry, path + " (map key)");
                }
                else if (entry.Number == 2)
                {
                    value = field.Kind == ProtoKind.Message ? Message(field, entry, path) : Value(field, entry, path);
                }
            }
            map[key] = value ?? field.Kind switch
            {
                ProtoKind.Message => new JsonObject(),
                ProtoKind.Quantity => "0",
                ProtoKind.Int32 or ProtoKind.Int64 => 0,
                ProtoKind.Bool => false,
                _ => "",
            };
        }

        private JsonObject Message(ProtoField field, WireField wire, string path)
        {
            var nested = new JsonObject();
            Into(nested, Bytes(wire, field, path), schemas.Message(field.MessageType!), path);
            return nested;
        }

        private JsonNode? Value(ProtoField field, WireField wire, string path) => field.Kind switch
        {
            ProtoKind.String => Text(wire, path),
            ProtoKind.Bytes => Convert.ToBase64String(Bytes(wire, field, path).Span),
            ProtoKind.Int32 or ProtoKind.Int64 or ProtoKind.Bool => Scalar(field.Kind, Varint(wire, field, path)),
            ProtoKind.IntOrString => IntOrString(Bytes(wire, field, path), path),
            ProtoKind.Quantity => Quantity(Bytes(wire, field, path), path),
            ProtoKind.Time => Time(Bytes(wire, field, path), path),
            ProtoKind.Duration => Duration(Bytes(wire, field, path), path),
            _ => throw new InvalidOperationException($"{field.Kind} is not a scalar kind"),
        };

        private static JsonNode Scalar(ProtoKind kind, ulong varint) => kind switch
        {
            ProtoKind.Int32 => JsonValue.Create(unchecked((int)varint)),
            ProtoKind.Int64 => JsonValue.Create(unchecked((long)varint)),
            _ => JsonValue.Create(varint != 0),
        };

        private JsonNode IntOrString(ReadOnlyMemory<byte> bytes, string path)
        {
            long type = 0;
            var intVal = 0;
            var strVal = "";
            var reader = new ProtoWireReader(bytes, Where(path));
            while (reader.TryRead(out var f))
            {
                switch (f.Number)
                {
                    case 1:
                        type = unchecked((long)Varint(f, "type", path));
                        break;
                    case 2:
                        intVal = unchecked((int)Varint(f, "intVal", path));
                        break;
                    case 3:
                        strVal = Text(f, path);
                        break;
                }
            }
            return type == 1 ? JsonValue.Create(strVal) : JsonValue.Create(intVal);
        }

        private string Quantity(ReadOnlyMemory<byte> bytes, string path)
        {
            var text = "";
            var reader = new ProtoWireReader(bytes, Where(path));
            while (reader.TryRead(out var f))
            {
                if (f.Number == 1)
                {
                    text = Text(f, path);
                }
            }
            return text;
        }

        private JsonNode? Time(ReadOnlyMemory<byte> bytes, string path)
        {
            if (bytes.IsEmpty)
            {
                return null;
            }
            long seconds = 0;
            var reader = new ProtoWireReader(bytes, Where(path));
            while (reader.TryRead(out var f))
            {
                if (f.Number == 1)
                {
                    seconds = unchecked((long)Varint(f, "seconds", path));
                }
            }
            if (seconds < MinUnixSeconds || seconds > MaxUnixSeconds)
            {
                throw ProtoWireReader.Malformed(Where(path), $"the time {seconds} s since 1970 is outside years 0001 to 9999");
            }
            return DateTimeOffset.FromUnixTimeSeconds(seconds).UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
        }

        private string Duration(ReadOnlyMemory<byte> bytes, string path)
        {
            long nanoseconds = 0;
            var reader = new ProtoWireReader(bytes, Where(path));
            while (reader.TryRead(out var f))
            {
                if (f.Number == 1)
                {
                    nanoseconds = unchecked((long)Varint(f, "duration", path));
                }
            }
            return GoDuration(nanoseconds);
        }

        private string Text(WireField wire, string path) =>
            wire.WireType == ProtoWireReader.LengthDelimited
                ? Utf8(wire.Bytes, Where(path))
                : throw WrongWireType(wire, "a string", path);

        private ReadOnlyMemory<byte> Bytes(WireField wire, ProtoField field, string path) =>
            wire.WireType == ProtoWireReader.LengthDelimited ? wire.Bytes : throw WrongWireType(wire, Describe(field), path);

        private ulong Varint(WireField wire, ProtoField field, string path) => Varint(wire, Describe(field), path);

        private ulong Varint(WireField wire, string what, string path) =>
            wire.WireType == ProtoWireReader.Varint ? wire.Varint : throw WrongWireType(wire, what, path);

        private ApiException WrongWireType(WireField wire, string expected, string path) =>
            ProtoWireReader.Malformed(Where(path), $"field {wire.Number} has wire type {wire.WireType}, which cannot hold {expected}");

        private static string Describe(ProtoField field) => field.Kind switch
        {
            ProtoKind.Int32 => "an int32 (varint, wire type 0)",
            ProtoKind.Int64 => "an int64 (varint, wire type 0)",
            ProtoKind.Bool => "a bool (varint, wire type 0)",
            ProtoKind.Message or ProtoKind.Inline => $"a {field.MessageType} message (wire type 2)",
            _ => $"a {field.Kind} (wire type 2)",
        };

        private string Where(string path) => path.Length == 0 ? root : $"{root} {path}";

        private static string Join(string path, string name) => path.Length == 0 ? name : $"{path}.{name}";

        private static bool IsZero(ProtoKind kind, JsonValue value)
        {
            if (value.TryGetValue<string>(out var text))
            {
                return text.Length == 0 || (kind == ProtoKind.Quantity && text == "0") || (kind == ProtoKind.Duration && text == "0s");
            }
            if (value.TryGetValue<bool>(out var flag))
            {
                return !flag;
            }
            return value.TryGetValue<int>(out var small) ? small == 0 : value.TryGetValue<long>(out var large) && large == 0;
        }
    }

    /// <summary>Formats nanoseconds as Go's time.Duration.String does: "1h2m3.5s", "1.5ms", "0s".</summary>
    public static string GoDuration(long nanoseconds)
    {
        if (nanoseconds == 0)
        {
            return "0s";
        }
        var magnitude = nanoseconds == long.MinValue ? (ulong)long.MaxValue + 1 : (ulong)Math.Abs(nanoseconds);
        var sign = nanoseconds < 0 ? "-" : "";
        if (magnitude < 1_000)
        {
            return $"{sign}{magnitude}ns";
        }
        if (magnitude < 1_000_000)
        {
            return $"{sign}{Fraction(magnitude, 1_000)}µs";
        }
        if (magnitude < 1_000_000_000)
        {
            return $"{sign}{Fraction(magnitude, 1_000_000)}ms";
        }
        var totalSeconds = magnitude / 1_000_000_000;
        var text = new StringBuilder(sign);
        var hours = totalSeconds / 3600;
        var minutes = totalSeconds / 60 % 60;
        if (hours > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"{hours}h");
        }
        if (hours > 0 || minutes > 0)
        {
            text.Append(CultureInfo.InvariantCulture, $"{minutes}m");
        }
        text.Append(Fraction(magnitude % 60_000_000_000, 1_000_000_000)).Append('s');
        return text.ToString();
    }

    private static string Fraction(ulong value, ulong unit)
    {
        var whole = (value / unit).ToString(CultureInfo.InvariantCulture);
        var rest = value % unit;
        if (rest == 0)
        {
            return whole;
        }
        var digits = unit.ToString(CultureInfo.InvariantCulture).Length - 1;
        return $"{whole}.{rest.ToString(CultureInfo.InvariantCulture).PadLeft(digits, '0').TrimEnd('0')}";
    }
}
