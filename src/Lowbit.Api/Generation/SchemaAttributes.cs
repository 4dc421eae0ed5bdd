namespace Lowbit.Api.Generation;

// Attributes on the C# resource types that the CRD generator (CrdGenerator) turns into OpenAPI v3 schema keywords.

/// <summary>The field or type description (<c>description</c>).</summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Class | AttributeTargets.Enum)]
public sealed class DescriptionAttribute(string text) : Attribute
{
    public string Text { get; } = text;
}

/// <summary>The property is listed in its parent's <c>required</c>.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class RequiredAttribute : Attribute;

/// <summary>The allowed values (<c>enum</c>); for C# enums the generator uses the enum's members instead.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class EnumAttribute(params object[] values) : Attribute
{
    public IReadOnlyList<object> Values { get; } = values;
}

/// <summary><c>minimum</c> (and <c>exclusiveMinimum</c>).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MinimumAttribute(double value, bool exclusive = false) : Attribute
{
    public double Value { get; } = value;
    public bool Exclusive { get; } = exclusive;
}

/// <summary><c>maximum</c> (and <c>exclusiveMaximum</c>).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MaximumAttribute(double value, bool exclusive = false) : Attribute
{
    public double Value { get; } = value;
    public bool Exclusive { get; } = exclusive;
}

/// <summary><c>pattern</c> (ECMA-262 subset that both Go's RE2 and .NET accept).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class PatternAttribute(string regex) : Attribute
{
    public string Regex { get; } = regex;
}

/// <summary><c>minLength</c>.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MinLengthAttribute(long value) : Attribute
{
    public long Value { get; } = value;
}

/// <summary><c>maxLength</c> (every string is bounded so CEL cost estimates stay bounded).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MaxLengthAttribute(long value) : Attribute
{
    public long Value { get; } = value;
}

/// <summary><c>minItems</c>.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MinItemsAttribute(long value) : Attribute
{
    public long Value { get; } = value;
}

/// <summary><c>maxItems</c> (every list is bounded).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MaxItemsAttribute(long value) : Attribute
{
    public long Value { get; } = value;
}

/// <summary>Bounds on the elements of a list of strings: <c>items.maxLength</c> and optional <c>items.pattern</c>.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ItemsAttribute(long maxLength, string? pattern = null) : Attribute
{
    public long MaxLength { get; } = maxLength;
    public string? Pattern { get; } = pattern;
}

/// <summary><c>maxProperties</c> for maps.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class MaxPropertiesAttribute(long value) : Attribute
{
    public long Value { get; } = value;
}

/// <summary>The schema <c>default</c>; applied by the API server to unset fields (never written back by the operator).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class DefaultAttribute(object value) : Attribute
{
    public object Value { get; } = value;
}

/// <summary>A schema <c>default</c> given as JSON text, for objects and lists (<c>"{}"</c> lets nested defaults apply).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class DefaultJsonAttribute(string json) : Attribute
{
    public string Json { get; } = json;
}

/// <summary><c>format</c> override (the generator sets int32/int64/double/date-time from the C# type).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class FormatAttribute(string format) : Attribute
{
    public string Format { get; } = format;
}

/// <summary>A CEL rule in <c>x-kubernetes-validations</c> on the property's schema or the type's schema.</summary>
[AttributeUsage(AttributeTargets.Property | AttributeTargets.Class, AllowMultiple = true)]
public sealed class CelRuleAttribute(string rule, string message) : Attribute
{
    public string Rule { get; } = rule;
    public string Message { get; } = message;
    /// <summary>Optional <c>fieldPath</c> the error is reported at (relative JSONPath like <c>.bits</c>).</summary>
    public string? FieldPath { get; init; }
    /// <summary>Optional <c>reason</c> (FieldValueInvalid, FieldValueForbidden, FieldValueRequired, FieldValueDuplicate).</summary>
    public string? Reason { get; init; }
}

/// <summary><c>x-kubernetes-list-type: map</c> keyed by the given fields.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ListMapKeysAttribute(params string[] keys) : Attribute
{
    public IReadOnlyList<string> Keys { get; } = keys;
}

/// <summary><c>x-kubernetes-list-type: set</c> (scalar elements, unique).</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class ListSetAttribute : Attribute;

/// <summary><c>x-kubernetes-preserve-unknown-fields: true</c> on an object-typed property.</summary>
[AttributeUsage(AttributeTargets.Property)]
public sealed class PreserveUnknownFieldsAttribute : Attribute;

/// <summary>An additional printer column of the resource (<c>kubectl get</c>).</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = true)]
public sealed class PrinterColumnAttribute(string name, string type, string jsonPath) : Attribute
{
    public string Name { get; } = name;
    public string Type { get; } = type;
    public string JsonPath { get; } = jsonPath;
    public string? Description { get; init; }
    public int Priority { get; init; }
}

/// <summary>CRD names beyond <see cref="k8s.Models.KubernetesEntityAttribute"/>: short names, category, scale subresource.</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class ResourceNamesAttribute(params string[] shortNames) : Attribute
{
    public IReadOnlyList<string> ShortNames { get; } = shortNames;
    public string Category { get; init; } = "lowbit";
    /// <summary>When set, the CRD gets a scale subresource with these JSON paths.</summary>
    public string? ScaleSpecReplicasPath { get; init; }
    public string? ScaleStatusReplicasPath { get; init; }
    public string? ScaleLabelSelectorPath { get; init; }
}
