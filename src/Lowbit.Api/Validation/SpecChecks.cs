using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using k8s;
using k8s.Models;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Api.Validation;

/// <summary>The C# mirrors of the shared CEL rules; each reports at the path kube-apiserver would use.</summary>
internal static partial class SpecChecks
{
    public static void ModelSource(ModelSource? source, string path, List<SchemaError> errors)
    {
        if (source is null)
        {
            return;
        }

        var count = (source.HuggingFace is null ? 0 : 1) + (source.Url is null ? 0 : 1) + (source.Pvc is null ? 0 : 1);
        if (count != 1)
        {
            errors.Add(Invalid(path, CelRules.ExactlyOneModelSourceMessage));
        }

        Pvc(source.Pvc, $"{path}.pvc", errors);
    }

    public static void DataSource(DataSource? source, string path, List<SchemaError> errors)
    {
        if (source is null)
        {
            return;
        }

        var count = (source.HuggingFace is null ? 0 : 1) + (source.Url is null ? 0 : 1) + (source.Pvc is null ? 0 : 1) + (source.ConfigMap is null ? 0 : 1);
        if (count != 1)
        {
            errors.Add(Invalid(path, CelRules.ExactlyOneDataSourceMessage));
        }

        Pvc(source.Pvc, $"{path}.pvc", errors);
    }

    public static void ModelReference(ModelReference? model, string path, List<SchemaError> errors)
    {
        if (model is null)
        {
            return;
        }

        if ((model.QuantizedModelRef is null) == (model.Source is null))
        {
            errors.Add(Invalid(path, CelRules.ExactlyOneModelMessage));
        }

        ModelSource(model.Source, $"{path}.source", errors);
    }

    public static void Pvc(PvcSource? pvc, string path, List<SchemaError> errors)
    {
        if (pvc?.Path is { } p && p.Contains("..", StringComparison.Ordinal))
        {
            errors.Add(Invalid($"{path}.path", CelRules.NoParentPathMessage));
        }
    }

    public static void Image(string? image, string path, List<SchemaError> errors)
    {
        if (image is not null && !DigestSuffix().IsMatch(image))
        {
            errors.Add(Invalid(path, CelRules.ImageDigestMessage));
        }
    }

    public static void Name(V1ObjectMeta? metadata, List<SchemaError> errors)
    {
        if (metadata?.Name is { Length: > CelRules.MaxNameLength })
        {
            errors.Add(Invalid("metadata.name", CelRules.NameLengthMessage));
        }
    }

    public static void Immutable<T>(T oldValue, T newValue, string path, string message, List<SchemaError> errors)
    {
        if (!JsonNode.DeepEquals(JsonNode.Parse(KubernetesJson.Serialize(oldValue)), JsonNode.Parse(KubernetesJson.Serialize(newValue))))
        {
            errors.Add(Invalid(path, message));
        }
    }

    public static SchemaError Invalid(string path, string message) => new(path, SchemaErrorReasons.Invalid, $"Invalid value: {message}");

    public static SchemaError Required(string path, string message) => new(path, SchemaErrorReasons.Required, $"Required value: {message}");

    public static SchemaError Forbidden(string path, string message) => new(path, SchemaErrorReasons.Forbidden, $"Forbidden: {message}");

    [GeneratedRegex(Patterns.DigestSuffix)]
    private static partial Regex DigestSuffix();
}
