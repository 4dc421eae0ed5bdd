using System.Text.Json.Nodes;
using Lowbit.Engine.Protocol;
using k8s;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;
using Lowbit.Api.Validation;

namespace Lowbit.Api.Tests;

public class ExamplesTests
{
    public static TheoryData<string> ExampleFiles()
    {
        var data = new TheoryData<string>();
        foreach (var file in ExamplePaths())
        {
            data.Add(file);
        }

        return data;
    }

    private static List<string> ExamplePaths() =>
        ManifestChecks.YamlFiles(RepoPaths.Examples).Select(f => Path.GetRelativePath(RepoPaths.Examples, f)).ToList();

    private static IEnumerable<JsonObject> LowbitDocuments(string relativePath) =>
        Yaml.ParseAll(File.ReadAllText(Path.Combine(RepoPaths.Examples, relativePath)))
            .OfType<JsonObject>()
            .Where(d => (string?)d["apiVersion"] == ApiGroup.ApiVersion);

    [Theory]
    [MemberData(nameof(ExampleFiles))]
    public void Does_accept_every_example_after_defaulting(string relativePath)
    {
        foreach (var document in LowbitDocuments(relativePath))
        {
            var errors = ManifestChecks.Admit(document);
            Assert.True(errors.Count == 0, $"{relativePath}: {string.Join("; ", errors)}");
        }
    }

    [Theory]
    [MemberData(nameof(ExampleFiles))]
    public void Does_round_trip_every_example_through_the_csharp_types_without_loss(string relativePath)
    {
        foreach (var document in LowbitDocuments(relativePath))
        {
            Assert.Empty(ManifestChecks.Admit(document));
            var roundTripped = RoundTrip(document);
            Assert.True(
                JsonNode.DeepEquals(document["spec"], roundTripped!["spec"]),
                $"{relativePath}: defaulted spec {document["spec"]!.ToJsonString()} != typed {roundTripped["spec"]!.ToJsonString()}");
        }
    }

    [Fact]
    public void Does_have_every_kind_in_examples_and_in_examples_local()
    {
        var all = ExamplePaths();
        foreach (var kind in new[] { QuantizedModel.KindName, FineTuneJob.KindName, InferenceEndpoint.KindName })
        {
            Assert.Contains(all.Where(f => !f.StartsWith("local", StringComparison.Ordinal)), f => LowbitDocuments(f).Any(d => (string?)d["kind"] == kind));
            Assert.Contains(all.Where(f => f.StartsWith("local", StringComparison.Ordinal)), f => LowbitDocuments(f).Any(d => (string?)d["kind"] == kind));
        }
    }

    [Fact]
    public void Does_keep_local_examples_on_cpu_with_the_tiny_model()
    {
        var local = ExamplePaths().Where(f => f.StartsWith("local", StringComparison.Ordinal));
        foreach (var document in local.SelectMany(LowbitDocuments))
        {
            Assert.Empty(ManifestChecks.Admit(document));
            Assert.Equal(["cpu"], document["spec"]!["scheduling"]!["allowedGpuTypes"]!.AsArray().Select(n => (string?)n));
        }

        var quantized = local.SelectMany(LowbitDocuments).Single(d => (string?)d["kind"] == QuantizedModel.KindName);
        Assert.Equal("lowbit-models", (string?)quantized["spec"]!["source"]!["pvc"]!["claimName"]);
        Assert.Equal("tiny-llama", (string?)quantized["spec"]!["source"]!["pvc"]!["path"]);
    }

    [Fact]
    public void Does_pass_the_resource_validator_for_typed_examples()
    {
        var file = Path.Combine(RepoPaths.Examples, "quantizedmodel-llama-2-7b-hqq-int4.yaml");
        var model = KubernetesJson.Deserialize<QuantizedModel>(Yaml.ParseObject(File.ReadAllText(file)).ToJsonString());
        Assert.Equal(QuantizationMethod.Hqq, model.Spec.Method);
        Assert.Equal([ExportFormat.Lowbit, ExportFormat.GgufQ4K], model.Spec.Formats);
        Assert.Empty(ResourceValidator.Validate(model));
    }

    private static JsonNode RoundTrip(JsonObject document) => (string)document["kind"]! switch
    {
        QuantizedModel.KindName => Reserialize<QuantizedModel>(document),
        FineTuneJob.KindName => Reserialize<FineTuneJob>(document),
        InferenceEndpoint.KindName => Reserialize<InferenceEndpoint>(document),
        var other => throw new InvalidOperationException($"unexpected kind {other}"),
    };

    private static JsonNode Reserialize<T>(JsonObject document) =>
        JsonNode.Parse(KubernetesJson.Serialize(KubernetesJson.Deserialize<T>(document.ToJsonString())))!;
}
