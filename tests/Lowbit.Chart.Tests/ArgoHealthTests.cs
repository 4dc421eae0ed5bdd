using System.Text.Json.Nodes;

namespace Lowbit.Chart.Tests;

/// <summary>argocd/resource_customizations/lowbit.dev/&lt;Kind&gt;: every case of health_test.yaml (Argo CD's own layout) under lua5.4.</summary>
public sealed class ArgoHealthTests
{
    public static TheoryData<string> Kinds => ["QuantizedModel", "FineTuneJob", "InferenceEndpoint"];

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task Does_answer_every_case_of_health_test_yaml(string kind)
    {
        var dir = Path.Combine(ArgoHealth.Root, kind);
        var tests = Yaml.Documents(await File.ReadAllTextAsync(Path.Combine(dir, "health_test.yaml")))[0]["tests"]!.AsArray();
        Assert.True(tests.Count >= 5, $"{kind}: expected at least 5 cases");
        var statuses = new HashSet<string>(StringComparer.Ordinal);
        foreach (var test in tests)
        {
            var input = Yaml.Documents(await File.ReadAllTextAsync(Path.Combine(dir, (string)test!["inputPath"]!)))[0];
            Assert.Equal(kind, (string?)input["kind"]);
            var (status, message) = await ArgoHealth.RunAsync(kind, input);
            Assert.Equal((string?)test["healthStatus"]!["status"], status);
            Assert.Equal((string?)test["healthStatus"]!["message"], message);
            statuses.Add(status);
        }

        Assert.Superset(new HashSet<string>(["Healthy", "Progressing", "Degraded"]), statuses);
        var inputs = Directory.GetFiles(Path.Combine(dir, "testdata")).Select(Path.GetFileName).Order(StringComparer.Ordinal);
        Assert.Equal(inputs, tests.Select(t => Path.GetFileName((string)t!["inputPath"]!)).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Does_call_an_object_without_a_generation_progressing_not_an_error()
    {
        var obj = JsonNode.Parse("""{"kind":"QuantizedModel","metadata":{"name":"m"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}""")!.AsObject();
        var (status, message) = await ArgoHealth.RunAsync("QuantizedModel", obj);
        Assert.Equal("Progressing", status);
        Assert.Contains("observe generation 0", message, StringComparison.Ordinal);
    }
}
