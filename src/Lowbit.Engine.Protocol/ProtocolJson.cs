using System.Text.Json.Serialization;

namespace Lowbit.Engine.Protocol;

/// <summary>Source-generated JSON for the protocol: camelCase, nulls omitted, compact.</summary>
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    AllowOutOfOrderMetadataProperties = true,
    NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals)]
[JsonSerializable(typeof(EngineEvent))]
[JsonSerializable(typeof(EngineResult))]
public sealed partial class ProtocolJson : JsonSerializerContext;
