using System.Reflection;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Lowbit.Engine.Protocol;
using Lowbit.LocalCluster.Tests;

namespace Lowbit.Chart.Tests;

/// <summary>charts/lowbit/files/dashboard.json: every metric each query names is one the operator or the engine exports.</summary>
public sealed partial class DashboardTests
{
    private static readonly HashSet<string> PromQlWords =
    [
        "sum", "min", "max", "avg", "count", "by", "without", "rate", "irate", "increase", "histogram_quantile", "label_values",
        "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "topk", "bottomk", "le",
    ];

    private static JsonObject Dashboard() =>
        JsonNode.Parse(File.ReadAllText(Path.Combine(Chart.Dir, "files", "dashboard.json")))!.AsObject();

    /// <summary>Series names the operator exports: the string literals of its metric definitions.</summary>
    private static HashSet<string> OperatorNames()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var project in new[] { "Lowbit.Operator", "Lowbit.Operator.Runtime" })
        {
            foreach (var file in Directory.GetFiles(Path.Combine(ClusterFixture.RepoRoot, "src", project), "*.cs", SearchOption.AllDirectories))
            {
                foreach (Match m in MetricLiteral().Matches(File.ReadAllText(file)))
                {
                    names.Add(m.Groups[1].Value);
                }
            }
        }

        return names;
    }

    /// <summary>Series names the engine exports: EngineMetricNames' constants (histograms as _bucket, _sum, _count).</summary>
    private static HashSet<string> EngineNames()
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in typeof(EngineMetricNames).GetFields(BindingFlags.Public | BindingFlags.Static).Where(f => f.IsLiteral))
        {
            var value = (string)field.GetRawConstantValue()!;
            if (value.StartsWith(EngineMetricNames.Prefix, StringComparison.Ordinal) && value.Length > EngineMetricNames.Prefix.Length)
            {
                names.UnionWith([value, value + EngineMetricNames.BucketSuffix, value + EngineMetricNames.SumSuffix, value + EngineMetricNames.CountSuffix]);
            }
        }

        return names;
    }

    /// <summary>The metric names of a PromQL expression: identifiers outside label matchers, strings and ranges that are not functions or keywords.</summary>
    internal static IReadOnlyList<string> MetricsOf(string expr)
    {
        var stripped = LabelValues().Replace(expr, "$1"); // label_values(metric, label): the label is no metric
        stripped = Braces().Replace(stripped, " ");
        stripped = Strings().Replace(stripped, " ");
        stripped = Ranges().Replace(stripped, " ");
        stripped = Grouping().Replace(stripped, " ");
        return [.. Identifier().Matches(stripped).Select(m => m.Value)
            .Where(id => !PromQlWords.Contains(id) && !char.IsDigit(id[0]) && !id.StartsWith('$'))
            .Distinct(StringComparer.Ordinal)];
    }

    [Fact]
    public void Does_query_only_metrics_the_code_exports()
    {
        var known = OperatorNames();
        known.UnionWith(EngineNames());
        Assert.Contains("controller_runtime_reconcile_errors_total", known);
        Assert.Contains("lowbit:time_to_first_token_seconds_bucket", known);
        var dashboard = Dashboard();
        var queries = dashboard["panels"]!.AsArray().SelectMany(p => p!["targets"]!.AsArray().Select(t => (string)t!["expr"]!))
            .Concat(dashboard["templating"]!["list"]!.AsArray().Where(v => (string?)v!["type"] == "query").Select(v => (string)v!["definition"]!))
            .ToList();
        Assert.True(queries.Count >= 12, $"expected the dashboard's queries, found {queries.Count}");
        var used = new HashSet<string>(StringComparer.Ordinal);
        foreach (var query in queries)
        {
            var metrics = MetricsOf(query);
            Assert.True(metrics.Count > 0, $"no metric in query: {query}");
            foreach (var metric in metrics)
            {
                Assert.True(known.Contains(metric), $"'{metric}' in '{query}' is exported by neither the operator nor the engine");
                used.Add(metric);
            }
        }

        // What the issue asks the dashboard to show.
        foreach (var required in new[]
        {
            "lowbit_endpoint_hourly_cost_usd", "lowbit_endpoint_usd_per_million_tokens", "lowbit_endpoint_time_to_first_token_seconds",
            "lowbit_endpoint_tokens_per_second", "lowbit_job_gpu_hours_total", "controller_runtime_reconcile_errors_total", "workqueue_depth",
            "llm_total_cost",
        })
        {
            Assert.Contains(required, used);
        }
    }

    [Fact]
    public void Does_find_the_metric_names_of_a_query_and_not_its_functions_or_labels()
    {
        Assert.Equal(["lowbit:time_to_first_token_seconds_bucket"],
            MetricsOf("histogram_quantile(0.95, sum by (le, model_name) (rate(lowbit:time_to_first_token_seconds_bucket{model_name=~\"a|b\"}[5m])))"));
        Assert.Equal(["a_total", "b"], MetricsOf("sum without (pod) (increase(a_total[1h])) / on (namespace) group_left b"));
        Assert.Equal(["lowbit_endpoint_gpus"], MetricsOf("label_values(lowbit_endpoint_gpus, namespace)"));
    }

    [Fact]
    public async Task Does_ship_the_dashboard_as_a_configmap_for_the_grafana_sidecar_only_when_enabled()
    {
        Assert.DoesNotContain((await Chart.TemplateAsync()).OfKind("ConfigMap"), c => ((string)c["metadata"]!["name"]!).EndsWith("-dashboard", StringComparison.Ordinal));
        var configMap = (await Chart.TemplateAsync("--set", "dashboard.enabled=true", "--set", "dashboard.namespace=monitoring")).Single("ConfigMap", "rel-lowbit-dashboard");
        Assert.Equal("1", (string?)configMap["metadata"]!["labels"]!["grafana_dashboard"]);
        Assert.Equal("monitoring", (string?)configMap["metadata"]!["namespace"]);
        var json = JsonNode.Parse((string)configMap["data"]!["lowbit.json"]!)!;
        Assert.Equal(Dashboard()["uid"]!.ToJsonString(), json["uid"]!.ToJsonString());
    }

    [GeneratedRegex("\"((?:lowbit_|controller_runtime_|workqueue_|leader_election_|rest_client_|llm_)[a-z0-9_]+)\"")]
    private static partial Regex MetricLiteral();

    [GeneratedRegex(@"label_values\(([^,()]+),[^)]*\)")]
    private static partial Regex LabelValues();

    [GeneratedRegex(@"\{[^}]*\}")]
    private static partial Regex Braces();

    [GeneratedRegex("\"[^\"]*\"")]
    private static partial Regex Strings();

    [GeneratedRegex(@"\[[^\]]*\]")]
    private static partial Regex Ranges();

    [GeneratedRegex(@"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")]
    private static partial Regex Grouping();

    [GeneratedRegex(@"[A-Za-z_:$][A-Za-z0-9_:]*")]
    private static partial Regex Identifier();
}
