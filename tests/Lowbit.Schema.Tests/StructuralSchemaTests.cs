using System.Text.Json.Nodes;
using k8s.Models;
using Lowbit.Schema;

namespace Lowbit.Schema.Tests;

public class StructuralSchemaTests
{
    private static V1JSONSchemaProps Schema(string yaml) => k8s.KubernetesJson.Deserialize<V1JSONSchemaProps>(Yaml.ParseObject(yaml).ToJsonString());

    private static JsonObject Obj(string yaml) => Yaml.ParseObject(yaml);

    private static readonly V1JSONSchemaProps Sample = Schema("""
        type: object
        properties:
          spec:
            type: object
            required: [name, bits]
            properties:
              name: {type: string, minLength: 1, maxLength: 8, pattern: "^[a-z]*$"}
              bits: {type: integer, minimum: 2, maximum: 8}
              ratio: {type: number, minimum: 0, exclusiveMinimum: true, maximum: 1, exclusiveMaximum: true}
              method: {type: string, enum: [rtn, hqq, gptq], default: hqq}
              enabled: {type: boolean}
              tags:
                type: array
                maxItems: 2
                minItems: 1
                items: {type: string, maxLength: 3}
                x-kubernetes-list-type: set
              adapters:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    weight: {type: number, default: 1.0}
                    matrix:
                      type: array
                      items:
                        type: array
                        items: {type: integer, format: int32}
              labels:
                type: object
                maxProperties: 2
                additionalProperties: {type: string, maxLength: 4}
              free:
                type: object
                x-kubernetes-preserve-unknown-fields: true
              quantity:
                x-kubernetes-int-or-string: true
                anyOf: [{type: integer}, {type: string}]
                pattern: "^[0-9]+(Gi|Mi)?$"
              nested:
                type: object
                default: {}
                properties:
                  timeout: {type: string, default: 10m}
              maybe: {type: string, nullable: true}
        """);

    [Fact]
    public void Does_accept_a_valid_object_and_apply_defaults()
    {
        var obj = Obj("""
            apiVersion: x/v1
            kind: X
            metadata: {name: a, labels: {keep: me}}
            spec: {name: abc, bits: 4, adapters: [{name: a}]}
            """);
        var errors = StructuralSchema.Apply(obj, Sample);
        Assert.Empty(errors);
        Assert.Equal("hqq", (string?)obj["spec"]!["method"]);
        Assert.Equal("10m", (string?)obj["spec"]!["nested"]!["timeout"]);
        Assert.Equal(1.0, (double)obj["spec"]!["adapters"]![0]!["weight"]!);
        Assert.Equal("me", (string?)obj["metadata"]!["labels"]!["keep"]);
    }

    [Fact]
    public void Does_not_override_a_value_the_user_set_when_defaulting()
    {
        var obj = Obj("spec: {name: abc, bits: 4, method: gptq, nested: {timeout: 1h}}");
        Assert.Empty(StructuralSchema.Apply(obj, Sample));
        Assert.Equal("gptq", (string?)obj["spec"]!["method"]);
        Assert.Equal("1h", (string?)obj["spec"]!["nested"]!["timeout"]);
    }

    [Fact]
    public void Does_prune_unknown_fields_but_keep_preserved_ones()
    {
        var obj = Obj("""
            apiVersion: x/v1
            kind: X
            metadata: {name: a}
            extra: 1
            spec: {name: abc, bits: 4, unknown: 2, free: {anything: {goes: true}}, adapters: [{name: a, bogus: 1}]}
            """);
        Assert.Empty(StructuralSchema.Apply(obj, Sample));
        Assert.False(obj.ContainsKey("extra"));
        Assert.False(obj["spec"]!.AsObject().ContainsKey("unknown"));
        Assert.False(obj["spec"]!["adapters"]![0]!.AsObject().ContainsKey("bogus"));
        Assert.True((bool)obj["spec"]!["free"]!["anything"]!["goes"]!);
        Assert.Equal("X", (string?)obj["kind"]);
    }

    [Fact]
    public void Does_report_missing_required_fields_with_their_paths()
    {
        var errors = StructuralSchema.Apply(Obj("spec: {}"), Sample);
        Assert.Contains(errors, e => e.Field == "spec.name" && e.Reason == SchemaErrorReasons.Required);
        Assert.Contains(errors, e => e.Field == "spec.bits" && e.Reason == SchemaErrorReasons.Required);
        Assert.Equal(2, errors.Count);
    }

    [Theory]
    [InlineData("spec: {name: abc, bits: '4'}", "spec.bits", SchemaErrorReasons.TypeInvalid, "must be of type integer")]
    [InlineData("spec: {name: abc, bits: 4.5}", "spec.bits", SchemaErrorReasons.TypeInvalid, "must be of type integer")]
    [InlineData("spec: {name: abc, bits: 9}", "spec.bits", SchemaErrorReasons.Invalid, "less than or equal to 8")]
    [InlineData("spec: {name: abc, bits: 1}", "spec.bits", SchemaErrorReasons.Invalid, "greater than or equal to 2")]
    [InlineData("spec: {name: abc, bits: 4, ratio: 0}", "spec.ratio", SchemaErrorReasons.Invalid, "should be greater than 0")]
    [InlineData("spec: {name: abc, bits: 4, ratio: 1}", "spec.ratio", SchemaErrorReasons.Invalid, "should be less than 1")]
    [InlineData("spec: {name: abc, bits: 4, method: awq}", "spec.method", SchemaErrorReasons.NotSupported, "supported values: \"rtn\", \"hqq\", \"gptq\"")]
    [InlineData("spec: {name: ABC, bits: 4}", "spec.name", SchemaErrorReasons.Invalid, "should match '^[a-z]*$'")]
    [InlineData("spec: {name: abcdefghij, bits: 4}", "spec.name", SchemaErrorReasons.TooLong, "may not be more than 8")]
    [InlineData("spec: {name: '', bits: 4}", "spec.name", SchemaErrorReasons.Invalid, "at least 1 chars")]
    [InlineData("spec: {name: abc, bits: 4, enabled: 'yes'}", "spec.enabled", SchemaErrorReasons.TypeInvalid, "boolean")]
    [InlineData("spec: {name: abc, bits: 4, tags: [a, b, c]}", "spec.tags", SchemaErrorReasons.TooMany, "at most 2 items")]
    [InlineData("spec: {name: abc, bits: 4, tags: []}", "spec.tags", SchemaErrorReasons.Invalid, "at least 1 items")]
    [InlineData("spec: {name: abc, bits: 4, tags: [a, a]}", "spec.tags[1]", SchemaErrorReasons.Duplicate, "Duplicate value")]
    [InlineData("spec: {name: abc, bits: 4, tags: [abcd]}", "spec.tags[0]", SchemaErrorReasons.TooLong, "more than 3")]
    [InlineData("spec: {name: abc, bits: 4, adapters: [{name: a}, {name: b}, {name: a}]}", "spec.adapters[2]", SchemaErrorReasons.Duplicate, "{\"name\":\"a\"}")]
    [InlineData("spec: {name: abc, bits: 4, adapters: [{weight: 2}]}", "spec.adapters[0].name", SchemaErrorReasons.Required, "Required value")]
    [InlineData("spec: {name: abc, bits: 4, adapters: [{name: a, matrix: [[1, 2], [3, x]]}]}", "spec.adapters[0].matrix[1][1]", SchemaErrorReasons.TypeInvalid, "integer")]
    [InlineData("spec: {name: abc, bits: 4, adapters: [{name: a, matrix: [[3000000000]]}]}", "spec.adapters[0].matrix[0][0]", SchemaErrorReasons.Invalid, "int32")]
    [InlineData("spec: {name: abc, bits: 4, labels: {a: x, b: y, c: z}}", "spec.labels", SchemaErrorReasons.TooMany, "at most 2 properties")]
    [InlineData("spec: {name: abc, bits: 4, labels: {a: toolong}}", "spec.labels[a]", SchemaErrorReasons.TooLong, "more than 4")]
    [InlineData("spec: {name: abc, bits: 4, quantity: 12Xi}", "spec.quantity", SchemaErrorReasons.Invalid, "should match")]
    [InlineData("spec: {name: abc, bits: 4, quantity: true}", "spec.quantity", SchemaErrorReasons.TypeInvalid, "integer or string")]
    [InlineData("spec: {name: abc, bits: 4, nested: []}", "spec.nested", SchemaErrorReasons.TypeInvalid, "object")]
    public void Does_reject_invalid_values_naming_the_field(string yaml, string field, string reason, string message)
    {
        var errors = StructuralSchema.Apply(Obj(yaml), Sample);
        var error = Assert.Single(errors);
        Assert.Equal(field, error.Field);
        Assert.Equal(reason, error.Reason);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_return_every_error_not_just_the_first()
    {
        var errors = StructuralSchema.Apply(Obj("spec: {name: ABC, bits: 99, method: x, tags: [a, b, c]}"), Sample);
        Assert.Equal(["spec.bits", "spec.method", "spec.name", "spec.tags"], errors.Select(e => e.Field).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Does_accept_integer_and_string_for_int_or_string()
    {
        Assert.Empty(StructuralSchema.Apply(Obj("spec: {name: abc, bits: 4, quantity: 12}"), Sample));
        Assert.Empty(StructuralSchema.Apply(Obj("spec: {name: abc, bits: 4, quantity: 12Gi}"), Sample));
    }

    [Fact]
    public void Does_drop_non_nullable_nulls_and_keep_nullable_ones()
    {
        var obj = Obj("spec: {name: abc, bits: 4, method: null, maybe: null}");
        Assert.Empty(StructuralSchema.Apply(obj, Sample));
        Assert.Equal("hqq", (string?)obj["spec"]!["method"]);
        Assert.True(obj["spec"]!.AsObject().ContainsKey("maybe"));
    }

    [Fact]
    public void Does_report_a_type_error_for_null_when_validating_without_pruning()
    {
        var error = Assert.Single(StructuralSchema.Validate(Obj("spec: {name: abc, bits: null}"), Sample));
        Assert.Equal("spec.bits", error.Field);
        Assert.Equal(SchemaErrorReasons.TypeInvalid, error.Reason);
    }

    [Fact]
    public void Does_prefix_paths_with_the_root_path()
    {
        var spec = Sample.Properties["spec"];
        var error = Assert.Single(StructuralSchema.Validate(Obj("{name: abc, bits: 0}"), spec, "spec"));
        Assert.Equal("spec.bits", error.Field);
    }

    [Fact]
    public void Does_not_mutate_in_validate()
    {
        var obj = Obj("spec: {name: abc, bits: 4, unknown: 1}");
        Assert.Empty(StructuralSchema.Validate(obj, Sample));
        Assert.True(obj["spec"]!.AsObject().ContainsKey("unknown"));
        Assert.False(obj["spec"]!.AsObject().ContainsKey("method"));
    }
}

public class StructuralSchemaLoadingShapesTests
{
    [Fact]
    public void Does_read_items_defaults_and_enums_from_yaml_deserialized_schemas()
    {
        // KubernetesYaml leaves object-typed members (items, default, enum) as Dictionary<object, object> and boxed scalars.
        var schema = k8s.KubernetesYaml.Deserialize<V1JSONSchemaProps>("""
            type: object
            properties:
              list:
                type: array
                items:
                  type: object
                  properties:
                    mode: {type: string, enum: [a, b], default: a}
                    n: {type: integer, default: 5, maximum: 9}
              nothing: {type: string, enum: [x, null], nullable: true}
            """);
        var obj = Yaml.ParseObject("list: [{}, {mode: c, n: 10}]\nnothing: null");
        var errors = StructuralSchema.Apply(obj, schema);
        Assert.Equal("a", (string?)obj["list"]![0]!["mode"]);
        Assert.Equal(5, (int)obj["list"]![0]!["n"]!);
        Assert.Equal(["list[1].mode", "list[1].n"], errors.Select(e => e.Field).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Does_read_json_element_shapes_from_json_deserialized_schemas()
    {
        var schema = k8s.KubernetesJson.Deserialize<V1JSONSchemaProps>("""
            {"type":"object","properties":{"m":{"type":"object","additionalProperties":{"type":"integer","minimum":0}},
             "s":{"type":"string","default":"d"}}}
            """);
        var obj = new JsonObject { ["m"] = new JsonObject { ["x"] = -1, ["y"] = 2 } };
        var error = Assert.Single(StructuralSchema.Apply(obj, schema));
        Assert.Equal("m[x]", error.Field);
        Assert.Equal("d", (string?)obj["s"]);
    }
}

public class StructuralSchemaKeywordTests
{
    private static V1JSONSchemaProps Schema(string yaml) => k8s.KubernetesJson.Deserialize<V1JSONSchemaProps>(Yaml.ParseObject(yaml).ToJsonString());

    [Theory]
    [InlineData("{type: object, minProperties: 2}", "{a: 1}", "", "at least 2 properties")]
    [InlineData("{type: number, multipleOf: 0.5}", "1.25", "", "multiple of 0.5")]
    [InlineData("{type: string, format: date-time}", "yesterday", "", "date-time")]
    [InlineData("{type: array, uniqueItems: true, items: {type: integer}}", "[1, 2, 1]", "[2]", "Duplicate value")]
    [InlineData("{type: string, anyOf: [{pattern: '^a'}, {pattern: '^b'}]}", "c", "", "at least one")]
    [InlineData("{type: integer, oneOf: [{minimum: 0}, {maximum: 10}]}", "5", "", "exactly one")]
    [InlineData("{type: string, not: {enum: [forbidden]}}", "forbidden", "", "must not match")]
    [InlineData("{type: integer, format: int64}", "1e30", "", "int64")]
    public void Does_check_the_less_common_keywords(string schema, string value, string field, string message)
    {
        var errors = StructuralSchema.Validate(Yaml.ParseAll($"v: {value}")[0]["v"], Schema(schema));
        var error = Assert.Single(errors);
        Assert.Equal(field, error.Field);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{type: object, minProperties: 2}", "{a: 1, b: 2}")]
    [InlineData("{type: number, multipleOf: 0.5}", "1.5")]
    [InlineData("{type: string, format: date-time}", "2026-11-22T19:33:28Z")]
    [InlineData("{type: string, anyOf: [{pattern: '^a'}, {pattern: '^b'}]}", "banana")]
    [InlineData("{type: integer, oneOf: [{minimum: 0}, {maximum: -1}]}", "5")]
    [InlineData("{type: integer}", "3.0")]
    [InlineData("{type: number}", "3")]
    [InlineData("{x-kubernetes-preserve-unknown-fields: true}", "{any: [thing]}")]
    public void Does_accept_values_that_satisfy_the_keyword(string schema, string value)
    {
        Assert.Empty(StructuralSchema.Validate(Yaml.ParseAll($"v: {value}")[0]["v"], Schema(schema)));
    }

    [Fact]
    public void Does_keep_apiversion_kind_and_metadata_of_embedded_resources()
    {
        var schema = Schema("""
            type: object
            properties:
              template:
                type: object
                x-kubernetes-embedded-resource: true
                properties:
                  spec: {type: object, properties: {a: {type: string}}}
            """);
        var obj = Yaml.ParseObject("template: {apiVersion: v1, kind: Pod, metadata: {name: p}, spec: {a: x, b: y}, extra: 1}");
        Assert.Empty(StructuralSchema.Apply(obj, schema));
        Assert.Equal("""{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"a":"x"}}""", obj["template"]!.ToJsonString());
    }
}
