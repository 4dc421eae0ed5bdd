using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Lowbit.LocalCluster.Tests;

namespace Lowbit.Chart.Tests;

/// <summary>The chart's RBAC: a snapshot per mode, no wildcards or Secrets, and exactly the API calls the operator's code makes.</summary>
public sealed partial class RbacTests
{
    private static readonly string[] RbacKinds = ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"];

    [Theory]
    [InlineData("cluster")]
    [InlineData("namespaced")]
    public async Task Does_match_the_rbac_snapshot(string mode)
    {
        var objects = await Chart.TemplateAsync(mode == "namespaced" ? Chart.Namespaced : []);
        var rbac = new JsonArray([.. objects.Where(o => RbacKinds.Contains((string?)o["kind"])).Select(Strip)]);
        var actual = rbac.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n";
        var snapshot = Path.Combine(ClusterFixture.RepoRoot, "tests", "Lowbit.Chart.Tests", "snapshots", $"rbac-{mode}.json");
        if (Environment.GetEnvironmentVariable("LOWBIT_UPDATE_SNAPSHOTS") == "1")
        {
            await File.WriteAllTextAsync(snapshot, actual);
        }

        Assert.True(File.Exists(snapshot), $"{snapshot} missing: run the test with LOWBIT_UPDATE_SNAPSHOTS=1 and review the diff");
        Assert.Equal(await File.ReadAllTextAsync(snapshot), actual);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Does_grant_no_wildcard_and_no_secret(bool namespaced)
    {
        var objects = await Chart.TemplateAsync(namespaced ? Chart.Namespaced : []);
        var rules = RulesOf(objects).ToList();
        Assert.DoesNotContain(rules, r => r.Rule.ToJsonString().Contains("\"*\"", StringComparison.Ordinal));
        Assert.DoesNotContain(rules, r => Strings(r.Rule["resources"]).Contains("secrets"));
    }

    [Fact]
    public async Task Does_give_namespaced_mode_no_cluster_wide_rights_on_workloads()
    {
        var objects = await Chart.TemplateAsync(Chart.Namespaced);
        var clusterRules = RulesOf(objects).Where(r => r.Kind == "ClusterRole").SelectMany(r => Strings(r.Rule["apiGroups"])).Distinct().Order(StringComparer.Ordinal);
        Assert.Equal(["authentication.k8s.io", "authorization.k8s.io"], clusterRules.Where(g => g != "").ToList());
        Assert.DoesNotContain(RulesOf(objects), r => r.Kind == "ClusterRole" && r.Rule["resources"] is null && r.Rule["nonResourceURLs"] is null);
        var args = objects.Single("Deployment", "rel-lowbit")["spec"]!["template"]!["spec"]!["containers"]![0]!["args"]!.AsArray().Select(a => (string)a!);
        Assert.Contains("--Operator:WatchNamespace=ml-team", args);
    }

    /// <summary>
    /// Reads src/Lowbit.Operator and src/Lowbit.Operator.Runtime for the API calls it makes (KubernetesClient methods, the kinds its informers list and
    /// watch, KubernetesClient's LeaseLock) and compares the (group, resource, verb) set with the chart's rules.
    /// </summary>
    [Fact]
    public async Task Does_grant_exactly_the_verbs_the_operator_code_uses()
    {
        var used = UsedByCode();
        var objects = await Chart.TemplateAsync();
        var granted = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (_, _, rule) in RulesOf(objects))
        {
            if (rule["nonResourceURLs"] is not null)
            {
                continue;
            }

            foreach (var group in Strings(rule["apiGroups"]))
            {
                foreach (var resource in Strings(rule["resources"]))
                {
                    foreach (var verb in Strings(rule["verbs"]))
                    {
                        granted.Add($"{group}/{resource}:{verb}");
                    }
                }
            }
        }

        // Secure metrics: the operator's own TokenReview/SubjectAccessReview calls.
        Assert.Equal(used.Order(StringComparer.Ordinal), granted.Order(StringComparer.Ordinal));
    }

    private static HashSet<string> UsedByCode()
    {
        var text = string.Join("\n", new[] { "Lowbit.Operator", "Lowbit.Operator.Runtime" }
            .SelectMany(project => Directory.GetFiles(Path.Combine(ClusterFixture.RepoRoot, "src", project), "*.cs", SearchOption.AllDirectories))
            .Where(file => !file.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Select(File.ReadAllText));
        var used = new HashSet<string>(StringComparer.Ordinal);
        var crs = new[] { "quantizedmodels", "finetunejobs", "inferenceendpoints" };
        foreach (Match call in ClientCall().Matches(text))
        {
            var (verb, kind) = (call.Groups["verb"].Value, call.Groups["kind"].Value);
            if (kind == "CustomObjectStatus")
            {
                Assert.Equal("Replace", verb);
                foreach (var cr in crs)
                {
                    used.Add($"lowbit.dev/{cr}/status:update");
                }

                continue;
            }

            var resource = Resource(kind);
            var verbs = verb switch
            {
                "Read" or "Get" => ["get"],
                "Create" => ["create"],
                "Replace" => ["update"],
                "Delete" => ["delete"],
                // Server-side apply creates an absent object: needs create too; a merge patch of a scale subresource never creates.
                "Patch" => kind.EndsWith("Scale", StringComparison.Ordinal) ? ["patch"] : new[] { "patch", "create" },
                _ => throw new InvalidOperationException($"unmapped client verb {verb} in {call.Value}"),
            };
            foreach (var v in verbs)
            {
                used.Add($"{resource}:{v}");
            }
        }

        foreach (Match watched in InformerKind().Matches(text))
        {
            var kind = watched.Groups["kind"].Value;
            var resource = kind switch
            {
                "QuantizedModel" or "FineTuneJob" or "InferenceEndpoint" => $"lowbit.dev/{kind.ToLowerInvariant()}s",
                "LeaderWorkerSet" => LeaderWorkerSets,
                _ => Resource(kind),
            };
            used.Add($"{resource}:list");
            used.Add($"{resource}:watch");
        }

        Assert.Contains("new LeaseLock(", text, StringComparison.Ordinal);
        used.UnionWith(["coordination.k8s.io/leases:get", "coordination.k8s.io/leases:create", "coordination.k8s.io/leases:update"]);
        if (text.Contains("CreateTokenReviewAsync", StringComparison.Ordinal))
        {
            used.Add("authentication.k8s.io/tokenreviews:create");
        }

        if (text.Contains("CreateSubjectAccessReviewAsync", StringComparison.Ordinal))
        {
            used.Add("authorization.k8s.io/subjectaccessreviews:create");
        }

        return used;
    }

    private static string Resource(string kind) => kind switch
    {
        "Pod" => "/pods",
        "PodLog" => "/pods/log",
        "Service" => "/services",
        "Event" => "/events",
        "Secret" => "/secrets",
        "Deployment" => "apps/deployments",
        "DeploymentScale" => "apps/deployments/scale",
        "Job" => "batch/jobs",
        "Lease" => "coordination.k8s.io/leases",
        // The only custom objects the operator reads, applies or deletes besides its own status writes.
        "CustomObject" => LeaderWorkerSets,
        _ => throw new InvalidOperationException($"kind {kind} has no resource mapping in this test; add it"),
    };

    private const string LeaderWorkerSets = "leaderworkerset.x-k8s.io/leaderworkersets";

    [GeneratedRegex(@"\.(?:CoreV1|AppsV1|BatchV1|CoordinationV1|CustomObjects|EventsV1)\.(?<verb>Read|Get|Create|Replace|Delete|Patch|List|Watch)Namespaced(?<kind>[A-Za-z]+?)Async\(")]
    private static partial Regex ClientCall();

    [GeneratedRegex(@"(?:Cache<(?:V1)?|MetadataOnlyUnless<(?:V1)?|Owns<(?:V1)?|Watches<(?:V1)?|AddController<)(?<kind>Pod|Deployment|Service|Job|QuantizedModel|FineTuneJob|InferenceEndpoint|LeaderWorkerSet)\b")]
    private static partial Regex InformerKind();

    private static IEnumerable<(string Kind, string? Namespace, JsonObject Rule)> RulesOf(IEnumerable<JsonObject> objects) =>
        objects.Where(o => (string?)o["kind"] is "ClusterRole" or "Role")
            .SelectMany(o => o["rules"]!.AsArray().Select(r => ((string)o["kind"]!, (string?)o["metadata"]!["namespace"], r!.AsObject())));

    private static List<string> Strings(JsonNode? node) => node is JsonArray a ? [.. a.Select(x => (string)x!)] : [];

    /// <summary>Labels carry the chart version; the snapshot holds what grants rights.</summary>
    private static JsonObject Strip(JsonObject o)
    {
        var copy = o.DeepClone().AsObject();
        copy["metadata"]!.AsObject().Remove("labels");
        return copy;
    }
}
