using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Lowbit.LocalCluster.Tests;
using Lowbit.Operator;
using Lowbit.Planner;

namespace Lowbit.Chart.Tests;

/// <summary>charts/lowbit rendered by the real helm 4: lint, the default, namespaced, minimal and full renders, Pod Security, RBAC, CRDs, schema.</summary>
public sealed partial class ChartTemplateTests
{
    public static TheoryData<string> Variants => ["default", "namespaced", "minimal", "full"];

    private static string[] ArgsOf(string variant) => variant switch
    {
        "default" => [],
        "namespaced" => Chart.Namespaced,
        "minimal" => Chart.Minimal,
        "full" => Chart.Full,
        _ => throw new ArgumentOutOfRangeException(nameof(variant)),
    };

    [Fact]
    public async Task Does_pass_helm_lint_strict_with_every_variant()
    {
        foreach (var variant in new[] { "default", "namespaced", "minimal" })
        {
            var result = await Chart.HelmAsync(["lint", "--strict", Chart.Dir, .. ArgsOf(variant)]);
            Assert.True(result.ExitCode == 0, $"helm lint --strict ({variant}) failed:\n{result.StdOut}\n{result.StdErr}");
            Assert.Contains("0 chart(s) failed", result.StdOut, StringComparison.Ordinal);
        }
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task Does_render_the_objects_each_variant_needs(string variant)
    {
        var objects = await Chart.TemplateAsync(ArgsOf(variant));
        var kinds = objects.Select(o => $"{o["kind"]}/{o["metadata"]!["name"]}@{o["metadata"]!["namespace"]}").Order(StringComparer.Ordinal).ToList();
        var expected = variant switch
        {
            "default" => new[]
            {
                "ClusterRole/rel-lowbit@", "ClusterRole/rel-lowbit-metrics-auth@", "ClusterRole/rel-lowbit-metrics-reader@",
                "ClusterRoleBinding/rel-lowbit@", "ClusterRoleBinding/rel-lowbit-metrics-auth@",
                "ConfigMap/rel-lowbit-catalog@lowbit-system", "CustomResourceDefinition/finetunejobs.lowbit.dev@",
                "CustomResourceDefinition/inferenceendpoints.lowbit.dev@", "CustomResourceDefinition/quantizedmodels.lowbit.dev@",
                "Deployment/rel-lowbit@lowbit-system", "PodDisruptionBudget/rel-lowbit@lowbit-system",
                "Role/rel-lowbit-leader-election@lowbit-system", "RoleBinding/rel-lowbit-leader-election@lowbit-system",
                "Service/rel-lowbit-metrics@lowbit-system", "ServiceAccount/rel-lowbit@lowbit-system",
            },
            "namespaced" => new[]
            {
                "ClusterRole/rel-lowbit-metrics-auth@", "ClusterRole/rel-lowbit-metrics-reader@", "ClusterRoleBinding/rel-lowbit-metrics-auth@",
                "ConfigMap/rel-lowbit-catalog@lowbit-system", "CustomResourceDefinition/finetunejobs.lowbit.dev@",
                "CustomResourceDefinition/inferenceendpoints.lowbit.dev@", "CustomResourceDefinition/quantizedmodels.lowbit.dev@",
                "Deployment/rel-lowbit@lowbit-system", "PodDisruptionBudget/rel-lowbit@lowbit-system",
                "Role/rel-lowbit-leader-election@lowbit-system", "Role/rel-lowbit@ml-team",
                "RoleBinding/rel-lowbit-leader-election@lowbit-system", "RoleBinding/rel-lowbit@ml-team",
                "Service/rel-lowbit-metrics@lowbit-system", "ServiceAccount/rel-lowbit@lowbit-system",
            },
            "minimal" => new[]
            {
                "ClusterRole/rel-lowbit@", "ClusterRoleBinding/rel-lowbit@", "ConfigMap/rel-lowbit-catalog@lowbit-system",
                "CustomResourceDefinition/finetunejobs.lowbit.dev@", "CustomResourceDefinition/inferenceendpoints.lowbit.dev@",
                "CustomResourceDefinition/quantizedmodels.lowbit.dev@", "Deployment/rel-lowbit@lowbit-system", "ServiceAccount/rel-lowbit@lowbit-system",
            },
            _ => new[]
            {
                "ClusterRole/rel-lowbit@", "ClusterRole/rel-lowbit-metrics-auth@", "ClusterRole/rel-lowbit-metrics-reader@",
                "ClusterRoleBinding/rel-lowbit@", "ClusterRoleBinding/rel-lowbit-metrics-auth@",
                "ConfigMap/rel-lowbit-catalog@lowbit-system", "ConfigMap/rel-lowbit-dashboard@lowbit-system",
                "CustomResourceDefinition/finetunejobs.lowbit.dev@", "CustomResourceDefinition/inferenceendpoints.lowbit.dev@",
                "CustomResourceDefinition/quantizedmodels.lowbit.dev@", "Deployment/rel-lowbit@lowbit-system",
                "NetworkPolicy/rel-lowbit-serving@lowbit-system", "NetworkPolicy/rel-lowbit@lowbit-system",
                "PodDisruptionBudget/rel-lowbit@lowbit-system", "PrometheusRule/rel-lowbit@lowbit-system",
                "Role/rel-lowbit-leader-election@lowbit-system", "RoleBinding/rel-lowbit-leader-election@lowbit-system",
                "Service/rel-lowbit-metrics@lowbit-system", "ServiceAccount/rel-lowbit@lowbit-system", "ServiceMonitor/rel-lowbit@lowbit-system",
            },
        };
        Assert.Equal(expected.Order(StringComparer.Ordinal), kinds);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public async Task Does_pass_pod_security_restricted_with_every_rendered_pod_spec(string variant)
    {
        var objects = await Chart.TemplateAsync(ArgsOf(variant));
        var templates = objects.Where(o => o["spec"]?["template"]?["spec"] is not null).ToList();
        Assert.NotEmpty(templates);
        foreach (var workload in templates)
        {
            var violations = PodSecurityRestricted.Check(workload["spec"]!["template"]!.AsObject());
            Assert.True(violations.Count == 0, $"{workload["kind"]}/{workload["metadata"]!["name"]}: {string.Join("; ", violations)}");
        }
    }

    [Fact]
    public void Does_report_each_restricted_violation_in_a_privileged_pod()
    {
        var pod = JsonNode.Parse("""
            { "metadata": { "annotations": { "container.apparmor.security.beta.kubernetes.io/a": "unconfined" } },
              "spec": { "hostNetwork": true, "hostPID": true,
                "securityContext": { "runAsUser": 0, "sysctls": [ { "name": "kernel.msgmax", "value": "1" } ] },
                "volumes": [ { "name": "h", "hostPath": { "path": "/" } }, { "name": "c", "configMap": { "name": "x" } } ],
                "containers": [ { "name": "a", "ports": [ { "containerPort": 80, "hostPort": 80 } ],
                  "securityContext": { "privileged": true, "capabilities": { "add": ["SYS_ADMIN", "CHOWN"] },
                    "seccompProfile": { "type": "Unconfined" }, "procMount": "Unmasked",
                    "seLinuxOptions": { "type": "spc_t", "user": "root" } } } ] } }
            """)!.AsObject();
        var violations = PodSecurityRestricted.Check(pod);
        foreach (var expected in new[]
        {
            "spec.hostNetwork", "spec.hostPID", "spec.volumes[0].hostPath", "spec.securityContext.sysctls", "metadata.annotations[container.apparmor",
            "spec.securityContext.runAsUser", "spec.containers[0].securityContext.privileged", "'SYS_ADMIN' is not allowed by baseline",
            "only NET_BIND_SERVICE, not 'CHOWN'", "capabilities.drop: must include ALL", "spec.containers[0].ports[0].hostPort",
            "seccompProfile.type: 'Unconfined'", "procMount", "seLinuxOptions.type", "seLinuxOptions.user", "allowPrivilegeEscalation: must be false",
            "spec.containers[0].securityContext.runAsNonRoot: must be true",
        })
        {
            Assert.Contains(violations, v => v.Contains(expected, StringComparison.Ordinal));
        }

        Assert.DoesNotContain(violations, v => v.Contains("volumes[1]", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Does_run_the_operator_hardened_with_leader_election_probes_and_a_disruption_budget()
    {
        var objects = await Chart.TemplateAsync();
        var deployment = objects.Single("Deployment", "rel-lowbit");
        Assert.Equal(2L, (long)deployment["spec"]!["replicas"]!);
        var pod = deployment["spec"]!["template"]!["spec"]!;
        var container = pod["containers"]![0]!;
        Assert.Equal(true, (bool?)container["securityContext"]!["readOnlyRootFilesystem"]);
        Assert.Equal("/healthz", (string?)container["livenessProbe"]!["httpGet"]!["path"]);
        Assert.Equal("/readyz", (string?)container["readinessProbe"]!["httpGet"]!["path"]);
        Assert.NotNull(container["resources"]!["requests"]!["memory"]);
        Assert.NotNull(container["resources"]!["limits"]!["memory"]);
        var args = container["args"]!.AsArray().Select(a => (string)a!).ToList();
        Assert.Contains("--Operator:LeaderElection:Enabled=true", args);
        Assert.Contains("--Operator:LeaderElection:LeaseName=rel-lowbit", args);
        Assert.Contains("--Operator:Metrics:Mode=secure", args);
        Assert.Contains("--Operator:Workloads:EngineImage=ghcr.io/lowbit-dev/lowbit-engine:0.1.0", args);
        Assert.Equal(1L, (long)objects.Single("PodDisruptionBudget", "rel-lowbit")["spec"]!["minAvailable"]!);

        var pinned = await Chart.TemplateAsync("--set", "engine.digest=sha256:" + new string('a', 64), "--set", "image.digest=sha256:" + new string('b', 64));
        var pinnedContainer = pinned.Single("Deployment", "rel-lowbit")["spec"]!["template"]!["spec"]!["containers"]![0]!;
        Assert.Equal("ghcr.io/lowbit-dev/lowbit-operator@sha256:" + new string('b', 64), (string?)pinnedContainer["image"]);
        Assert.Contains("--Operator:Workloads:EngineImage=ghcr.io/lowbit-dev/lowbit-engine@sha256:" + new string('a', 64),
            pinnedContainer["args"]!.AsArray().Select(a => (string)a!));
    }

    [Fact]
    public async Task Does_change_the_pod_template_checksum_when_the_catalog_changes()
    {
        static string Checksum(IEnumerable<JsonObject> objects) =>
            (string)objects.Single("Deployment", "rel-lowbit")["spec"]!["template"]!["metadata"]!["annotations"]!["checksum/catalog"]!;

        var first = Checksum(await Chart.TemplateAsync());
        var again = Checksum(await Chart.TemplateAsync());
        var changed = Checksum(await Chart.TemplateAsync("--set-json",
            """catalog.nodeTypes=[{"name":"t4","usdPerHour":0.30,"priceSource":"negotiated","priceDate":"2026-12"}]"""));
        Assert.Equal(first, again);
        Assert.NotEqual(first, changed);
    }

    [Fact]
    public async Task Does_render_the_catalog_values_as_the_built_in_catalog_the_operator_reads()
    {
        var objects = await Chart.TemplateAsync();
        var json = (string)objects.Single("ConfigMap", "rel-lowbit-catalog")["data"]!["catalog.json"]!;
        var file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, json);
            var catalog = new CatalogOptions { File = file }.Load();
            Assert.Equal(GpuCatalog.Default.NodeTypes.Select(n => (n.Name, n.UsdPerHour, n.PriceSource, n.PriceDate)),
                catalog.NodeTypes.Select(n => (n.Name, n.UsdPerHour, n.PriceSource, n.PriceDate)));
            Assert.Equal(GpuCatalog.Default.NodeTypes.Select(n => n.MemoryPerDevice), catalog.NodeTypes.Select(n => n.MemoryPerDevice));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Does_ship_the_crds_of_the_crds_folder_byte_for_byte()
    {
        var source = Path.Combine(ClusterFixture.RepoRoot, "crds");
        var inChart = Path.Combine(Chart.Dir, "crds");
        Assert.Equal(Directory.GetFiles(source).Select(Path.GetFileName).Order(StringComparer.Ordinal), Directory.GetFiles(inChart).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        foreach (var file in Directory.GetFiles(source))
        {
            Assert.True(File.ReadAllBytes(file).AsSpan().SequenceEqual(File.ReadAllBytes(Path.Combine(inChart, Path.GetFileName(file)))),
                $"charts/lowbit/crds/{Path.GetFileName(file)} differs from crds/: run `make crds`");
        }

        var rendered = (await Chart.TemplateAsync()).OfKind("CustomResourceDefinition").Select(c => (string)c["metadata"]!["name"]!);
        Assert.Equal(["finetunejobs.lowbit.dev", "inferenceendpoints.lowbit.dev", "quantizedmodels.lowbit.dev"], rendered.Order(StringComparer.Ordinal));
    }

    [Theory]
    [InlineData("replicaCount=0", "/replicaCount")]
    [InlineData("engine.tag=latest", "/engine/tag")]
    [InlineData("engine.vllmImage=vllm/vllm-openai:latest", "/engine/vllmImage")]
    [InlineData("engine.digest=sha256:abc", "/engine/digest")]
    [InlineData("metrics.mode=open", "/metrics/mode")]
    [InlineData("scope=everywhere", "/scope")]
    [InlineData("replicas=2", "additional properties 'replicas' not allowed")]
    [InlineData("watchNamespaces={Bad_Name}", "/watchNamespaces/0")]
    [InlineData("scope=namespaced", "watchNamespaces: scope namespaced needs exactly one namespace")]
    [InlineData("leaderElection.enabled=false", "leaderElection.enabled: must be true when replicaCount > 1")]
    [InlineData("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.enabled: the cluster has no monitoring.coreos.com/v1 ServiceMonitor")]
    public async Task Does_reject_a_bad_value_naming_the_field(string setting, string expected)
    {
        var result = await Chart.HelmAsync("template", "rel", Chart.Dir, "--set", setting);
        Assert.NotEqual(0, result.ExitCode);
        Assert.Contains(expected, result.StdErr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_tell_the_user_what_to_apply_next()
    {
        var result = await Chart.HelmAsync("install", "rel", Chart.Dir, "--namespace", "lowbit-system", "--dry-run=client");
        Assert.True(result.ExitCode == 0, result.StdErr);
        var notes = result.StdOut[result.StdOut.IndexOf("NOTES:", StringComparison.Ordinal)..];
        Assert.Contains("kubectl -n lowbit-system rollout status deployment/rel-lowbit", notes, StringComparison.Ordinal);
        Assert.Contains("kubectl apply", notes, StringComparison.Ordinal);
        Assert.Contains("--clusterrole=rel-lowbit-metrics-reader", notes, StringComparison.Ordinal);
    }
}
