using System.Globalization;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Tests;
using YamlDotNet.RepresentationModel;

namespace Lowbit.Chart.Tests;

/// <summary>The chart under test (charts/lowbit) and the real helm binary rendering it.</summary>
internal static class Chart
{
    public static string Dir => Path.Combine(ClusterFixture.RepoRoot, "charts", "lowbit");

    /// <summary>Values of the three render variants the issue names.</summary>
    public static readonly string[] Namespaced = ["--set", "scope=namespaced", "--set", "watchNamespaces={ml-team}"];

    public static readonly string[] Minimal = ["--set", "replicaCount=1", "--set", "leaderElection.enabled=false", "--set", "metrics.mode=localhost",
        "--set", "podDisruptionBudget.enabled=false", "--set", "rbac.create=true"];

    /// <summary>Everything optional switched on (ServiceMonitor and PrometheusRule need their API, given with --api-versions).</summary>
    public static readonly string[] Full = ["--set", "networkPolicy.operator.enabled=true", "--set", "networkPolicy.serving.enabled=true",
        "--set", "dashboard.enabled=true", "--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.prometheusRule.enabled=true",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor", "--api-versions", "monitoring.coreos.com/v1/PrometheusRule"];

    public static async Task<ToolResult> HelmAsync(params string[] args)
    {
        var home = Directory.CreateTempSubdirectory("lowbit-chart-helm-").FullName;
        try
        {
            return await ClusterFixture.RunToolAsync(ClusterFixture.Tool("helm"), args, Path.Combine(home, "no-kubeconfig"), home, TimeSpan.FromSeconds(60));
        }
        finally
        {
            Directory.Delete(home, recursive: true);
        }
    }

    /// <summary><c>helm template rel charts/lowbit -n lowbit-system ARGS</c>, which must succeed; the rendered objects.</summary>
    public static async Task<IReadOnlyList<JsonObject>> TemplateAsync(params string[] args)
    {
        var result = await HelmAsync(["template", "rel", Dir, "--namespace", "lowbit-system", "--include-crds", .. args]);
        Assert.True(result.ExitCode == 0, $"helm template {string.Join(' ', args)} failed: {result.StdErr}");
        return Yaml.Documents(result.StdOut);
    }

    public static IEnumerable<JsonObject> OfKind(this IEnumerable<JsonObject> objects, string kind) =>
        objects.Where(o => (string?)o["kind"] == kind);

    public static JsonObject Single(this IEnumerable<JsonObject> objects, string kind, string name) =>
        objects.OfKind(kind).SingleOrDefault(o => (string?)o["metadata"]!["name"] == name)
            ?? throw new Xunit.Sdk.XunitException($"no {kind} {name} rendered; rendered: {string.Join(", ", objects.Select(o => $"{o["kind"]}/{o["metadata"]?["name"]}"))}");
}

/// <summary>YAML (one or more documents) to JSON nodes: plain scalars become booleans, numbers or null as YAML 1.2 core reads them.</summary>
internal static class Yaml
{
    public static IReadOnlyList<JsonObject> Documents(string text)
    {
        var stream = new YamlStream();
        stream.Load(new StringReader(text));
        return [.. stream.Documents.Select(d => Convert(d.RootNode)).OfType<JsonObject>()];
    }

    public static JsonNode? Convert(YamlNode node) => node switch
    {
        YamlMappingNode map => new JsonObject(map.Children.Select(kv => KeyValuePair.Create(((YamlScalarNode)kv.Key).Value!, Convert(kv.Value)))),
        YamlSequenceNode seq => new JsonArray([.. seq.Children.Select(Convert)]),
        YamlScalarNode scalar => Scalar(scalar),
        _ => null,
    };

    private static JsonNode? Scalar(YamlScalarNode scalar)
    {
        var value = scalar.Value ?? "";
        if (scalar.Style is not YamlDotNet.Core.ScalarStyle.Plain)
        {
            return JsonValue.Create(value);
        }

        return value switch
        {
            "" or "null" or "~" => null,
            "true" => JsonValue.Create(true),
            "false" => JsonValue.Create(false),
            _ when long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var i) => JsonValue.Create(i),
            _ when double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) && value.Any(char.IsDigit) => JsonValue.Create(d),
            _ => JsonValue.Create(value),
        };
    }
}
