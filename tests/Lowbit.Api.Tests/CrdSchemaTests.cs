using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Api.Tests;

public class CrdSchemaTests
{
    private static V1CustomResourceDefinition Crd<T>() => CrdGenerator.Generate(typeof(T));

    private static V1JSONSchemaProps Root<T>() => CustomResourceDefinitions.SchemaOf(Crd<T>());

    /// <summary>Walks a schema: (path, node) for every node, items as <c>[]</c>.</summary>
    private static IEnumerable<(string Path, V1JSONSchemaProps Schema)> Walk(V1JSONSchemaProps schema, string path = "")
    {
        yield return (path, schema);
        foreach (var (name, child) in schema.Properties ?? new Dictionary<string, V1JSONSchemaProps>())
        {
            foreach (var entry in Walk(child, path.Length == 0 ? name : $"{path}.{name}"))
            {
                yield return entry;
            }
        }

        if (schema.Items is V1JSONSchemaProps items)
        {
            foreach (var entry in Walk(items, $"{path}[]"))
            {
                yield return entry;
            }
        }
    }

    public static TheoryData<Type> Resources() => new(CrdGenerator.ResourceTypes);

    [Theory]
    [MemberData(nameof(Resources))]
    public void Does_bound_every_string_and_list_so_cel_cost_stays_bounded(Type resource)
    {
        var schema = CustomResourceDefinitions.SchemaOf(CrdGenerator.Generate(resource));
        var unbounded = Walk(schema)
            .Where(e => e.Path is not ("apiVersion" or "kind"))
            .Where(e => (e.Schema.Type == "string" && e.Schema.MaxLength is null && e.Schema.EnumProperty is null && e.Schema.Format != "date-time")
                || (e.Schema.Type == "array" && e.Schema.MaxItems is null))
            .Select(e => e.Path)
            .ToList();
        Assert.True(unbounded.Count == 0, $"{resource.Name}: unbounded {string.Join(", ", unbounded)}");
    }

    [Theory]
    [MemberData(nameof(Resources))]
    public void Does_describe_every_spec_field(Type resource)
    {
        var schema = CustomResourceDefinitions.SchemaOf(CrdGenerator.Generate(resource));
        var undescribed = Walk(schema.Properties["spec"], "spec")
            .Where(e => !e.Path.EndsWith("[]", StringComparison.Ordinal) && string.IsNullOrEmpty(e.Schema.Description))
            .Select(e => e.Path)
            .ToList();
        Assert.True(undescribed.Count == 0, $"{resource.Name}: no description on {string.Join(", ", undescribed)}");
    }

    [Theory]
    [MemberData(nameof(Resources))]
    public void Does_declare_names_status_subresource_printer_columns_and_condition_list_map(Type resource)
    {
        var crd = CrdGenerator.Generate(resource);
        var version = Assert.Single(crd.Spec.Versions);
        Assert.Equal(ApiGroup.Version, version.Name);
        Assert.True(version.Served && version.Storage);
        Assert.NotNull(version.Subresources.Status);
        Assert.Equal("Namespaced", crd.Spec.Scope);
        Assert.Equal(["lowbit"], crd.Spec.Names.Categories);
        Assert.Equal($"{crd.Spec.Names.Plural}.{ApiGroup.Group}", crd.Metadata.Name);
        foreach (var column in new[] { "Ready", "Phase", "GPU", "Shards", "USD/h", "Age" })
        {
            Assert.Contains(version.AdditionalPrinterColumns, c => c.Name == column);
        }

        Assert.Equal(".metadata.creationTimestamp", version.AdditionalPrinterColumns.Single(c => c.Name == "Age").JsonPath);
        var conditions = version.Schema.OpenAPIV3Schema.Properties["status"].Properties["conditions"];
        Assert.Equal("map", conditions.XKubernetesListType);
        Assert.Equal(["type"], conditions.XKubernetesListMapKeys);
        var condition = (V1JSONSchemaProps)conditions.Items;
        Assert.Equal(["lastTransitionTime", "message", "reason", "status", "type"], condition.Required.Order(StringComparer.Ordinal));
        Assert.Equal("int64", version.Schema.OpenAPIV3Schema.Properties["status"].Properties["observedGeneration"].Format);
    }

    [Fact]
    public void Does_use_the_short_names_qm_ftj_ie()
    {
        Assert.Equal(["qm"], Crd<QuantizedModel>().Spec.Names.ShortNames);
        Assert.Equal(["ftj"], Crd<FineTuneJob>().Spec.Names.ShortNames);
        Assert.Equal(["ie"], Crd<InferenceEndpoint>().Spec.Names.ShortNames);
    }

    [Fact]
    public void Does_give_only_inference_endpoints_a_scale_subresource()
    {
        var scale = Crd<InferenceEndpoint>().Spec.Versions[0].Subresources.Scale;
        Assert.Equal(".spec.replicas", scale.SpecReplicasPath);
        Assert.Equal(".status.replicas", scale.StatusReplicasPath);
        Assert.Equal(".status.selector", scale.LabelSelectorPath);
        Assert.Null(Crd<QuantizedModel>().Spec.Versions[0].Subresources.Scale);
        Assert.Null(Crd<FineTuneJob>().Spec.Versions[0].Subresources.Scale);
    }

    [Fact]
    public void Does_map_csharp_enums_to_their_wire_names()
    {
        var spec = Root<QuantizedModel>().Properties["spec"];
        Assert.Equal(["rtn", "hqq", "gptq"], spec.Properties["method"].EnumProperty.Select(v => v.ToString()));
        Assert.Equal(
            ["lowbit", "gptq", "gguf-q8_0", "gguf-q4_0", "gguf-q4_k"],
            ((V1JSONSchemaProps)spec.Properties["formats"].Items).EnumProperty.Select(v => v.ToString()));
        Assert.Equal(["spec"], Root<QuantizedModel>().Required);
        Assert.Equal(["source", "method", "output"], spec.Required);
    }

    [Fact]
    public void Does_mark_resource_quantities_int_or_string()
    {
        var cpu = Root<FineTuneJob>().Properties["spec"].Properties["resources"].Properties["cpu"];
        Assert.True(cpu.XKubernetesIntOrString);
        Assert.Equal(Patterns.Quantity, cpu.Pattern);
    }

    [Fact]
    public void Does_match_every_schema_default_with_the_csharp_initializer()
    {
        // A typed object the operator builds without the API server must mean the same as a defaulted one.
        var mismatches = new List<string>();
        var compared = 0;
        foreach (var type in typeof(QuantizedModelSpec).Assembly.GetTypes().Where(t => t.Namespace == typeof(QuantizedModelSpec).Namespace && t.IsPublic && t.IsClass && !t.IsAbstract && t.GetConstructor(Type.EmptyTypes) is not null))
        {
            var instance = Activator.CreateInstance(type)!;
            var node = System.Text.Json.Nodes.JsonNode.Parse(k8s.KubernetesJson.Serialize(instance))!.AsObject();
            foreach (var property in type.GetProperties())
            {
                var name = System.Text.Json.JsonNamingPolicy.CamelCase.ConvertName(property.Name);
                object? declared = property.GetCustomAttributes(typeof(DefaultAttribute), false).Cast<DefaultAttribute>().FirstOrDefault()?.Value;
                var json = declared is null
                    ? property.GetCustomAttributes(typeof(DefaultJsonAttribute), false).Cast<DefaultJsonAttribute>().FirstOrDefault()?.Json
                    : System.Text.Json.JsonSerializer.Serialize(declared);
                if (json is null)
                {
                    continue;
                }

                compared++;
                var expected = System.Text.Json.Nodes.JsonNode.Parse(json);
                var actual = node[name];
                var same = expected is System.Text.Json.Nodes.JsonObject { Count: 0 }
                    ? actual is System.Text.Json.Nodes.JsonObject
                    : System.Text.Json.Nodes.JsonNode.DeepEquals(expected, actual);
                if (!same)
                {
                    mismatches.Add($"{type.Name}.{property.Name}: schema default {json}, C# {actual?.ToJsonString() ?? "null"}");
                }
            }
        }

        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches));
        Assert.True(compared >= 20, $"only {compared} defaults compared");
    }
}
