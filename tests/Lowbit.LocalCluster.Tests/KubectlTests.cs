using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The embedded API server driven by the real kubectl 1.33 binary.</summary>
public sealed class KubectlTests : IClassFixture<ClusterFixture>
{
    private readonly ClusterFixture _cluster;

    public KubectlTests(ClusterFixture cluster) => _cluster = cluster;

    private static string Fixture(string name) => Path.Combine(ClusterFixture.FixturesDir, name);

    private async Task InstallWidgetsAsync()
    {
        await _cluster.Kubectl("apply", "-f", Fixture("widgets-crd.yaml"));
    }

    private async Task<string> NewNamespaceAsync(string prefix)
    {
        var name = $"{prefix}-{Guid.NewGuid().ToString("N")[..6]}";
        await _cluster.Kubectl("create", "namespace", name);
        return name;
    }

    [Fact]
    public async Task Does_report_server_version_when_kubectl_version_runs()
    {
        var result = await _cluster.KubectlAsync("version");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("Server Version: v1.33.0", result.StdOut, StringComparison.Ordinal);
        Assert.DoesNotContain("WARNING", result.StdErr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_list_builtin_and_custom_resources_when_api_resources_runs()
    {
        await InstallWidgetsAsync();
        var result = await _cluster.KubectlAsync("api-resources");
        Assert.Equal(0, result.ExitCode);
        Assert.Equal("", result.StdErr.Trim());
        foreach (var expected in new[] { "pods", "deployments", "jobs", "leases", "customresourcedefinitions", "widgets" })
        {
            Assert.Contains(expected, result.StdOut, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Does_list_initial_namespaces_and_create_one_when_asked()
    {
        var before = await _cluster.Kubectl("get", "ns");
        Assert.Contains("kube-system", before, StringComparison.Ordinal);
        Assert.Contains("default", before, StringComparison.Ordinal);
        var created = await _cluster.Kubectl("create", "ns", "created-by-kubectl");
        Assert.Contains("namespace/created-by-kubectl created", created, StringComparison.Ordinal);
        var after = await _cluster.Kubectl("get", "ns", "created-by-kubectl");
        Assert.Matches(@"created-by-kubectl\s+Active", after);
    }

    [Fact]
    public async Task Does_serve_custom_resources_with_printer_columns_when_crd_is_applied()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("cols");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        var table = await _cluster.Kubectl("get", "widgets", "-n", ns);
        Assert.Matches(@"NAME\s+SIZE\s+READY\s+AGE", table);
        Assert.Matches(@"w1\s+medium\s+\d+s", table);
        var yaml = await _cluster.Kubectl("get", "widget", "w1", "-n", ns, "-o", "yaml");
        Assert.Contains("kind: Widget", yaml, StringComparison.Ordinal);
        Assert.Contains("color: blue", yaml, StringComparison.Ordinal);
        Assert.Contains("resourceVersion:", yaml, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_report_unchanged_when_client_side_apply_repeats_and_configured_when_it_changes()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("csa");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        var again = await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        Assert.Contains("widget.test.lowbit.dev/w1 unchanged", again, StringComparison.Ordinal);
        var changed = Path.Combine(Path.GetTempPath(), $"widget-{ns}.yaml");
        await File.WriteAllTextAsync(changed, (await File.ReadAllTextAsync(Fixture("widget.yaml"))).Replace("  color: blue\n", "").Replace("size: medium", "size: large"));
        var configured = await _cluster.Kubectl("apply", "-n", ns, "-f", changed);
        Assert.Contains("configured", configured, StringComparison.Ordinal);
        var obj = _cluster.Server.Api.Get(_cluster.Server.Api.Resources.Find("test.lowbit.dev", "v1", "widgets")!, ns, "w1");
        Assert.Equal("large", (string?)obj["spec"]!["size"]);
        Assert.Null(obj["spec"]!["color"]);
        Assert.Equal(2, (long?)obj["metadata"]!["generation"]);
        await File.WriteAllTextAsync(changed, (await File.ReadAllTextAsync(Fixture("widget.yaml"))).Replace("color: blue", "colour: blue"));
        var strict = await _cluster.KubectlAsync("apply", "-n", ns, "-f", changed);
        Assert.NotEqual(0, strict.ExitCode);
        Assert.Contains("strict decoding error: unknown field \"spec.colour\"", strict.StdErr, StringComparison.Ordinal);
        var warned = await _cluster.KubectlAsync("apply", "-n", ns, "--validate=warn", "-f", changed);
        Assert.Equal(0, warned.ExitCode);
        Assert.Contains("unknown field \"spec.colour\"", warned.StdErr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_apply_builtin_kinds_server_side_with_field_manager()
    {
        var ns = await NewNamespaceAsync("ssa");
        var manifest = Path.Combine(Path.GetTempPath(), $"cm-{ns}.yaml");
        await File.WriteAllTextAsync(manifest, $"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  a: \"1\"\n  b: \"2\"\n");
        var first = await _cluster.Kubectl("apply", "--server-side", "-f", manifest);
        Assert.Contains("configmap/settings serverside-applied", first, StringComparison.Ordinal);
        await File.WriteAllTextAsync(manifest, $"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {ns}\ndata:\n  a: \"1\"\n");
        await _cluster.Kubectl("apply", "--server-side", "-f", manifest);
        var cm = _cluster.Server.Api.Get(BuiltinResources.ConfigMaps, ns, "settings");
        Assert.Equal("1", (string?)cm["data"]!["a"]);
        Assert.Null(cm["data"]!["b"]);
        var managers = cm["metadata"]!["managedFields"]!.AsArray().Select(m => (string?)m!["manager"]).ToList();
        Assert.Contains("kubectl", managers);
    }

    [Fact]
    public async Task Does_apply_our_crds_and_examples_when_the_repository_has_them()
    {
        var crds = Directory.Exists(Path.Combine(ClusterFixture.RepoRoot, "crds"))
            ? Directory.GetFiles(Path.Combine(ClusterFixture.RepoRoot, "crds"), "*.yaml") : [];
        var examples = Directory.Exists(Path.Combine(ClusterFixture.RepoRoot, "examples"))
            ? Directory.GetFiles(Path.Combine(ClusterFixture.RepoRoot, "examples"), "*.yaml") : [];
        var files = crds.Length > 0 ? crds : [Fixture("widgets-crd.yaml")];
        foreach (var file in files)
        {
            await _cluster.Kubectl("apply", "-f", file);
            await _cluster.Kubectl("apply", "--server-side", "--force-conflicts", "-f", file);
        }
        if (crds.Length == 0)
        {
            return;
        }
        var ns = await NewNamespaceAsync("examples");
        foreach (var example in examples)
        {
            var applied = await _cluster.Kubectl("apply", "-n", ns, "-f", example);
            Assert.Contains("created", applied, StringComparison.Ordinal);
            await _cluster.Kubectl("apply", "--server-side", "-n", ns, "-f", example);
        }
    }

    [Fact]
    public async Task Does_reject_every_invalid_lowbit_manifest_with_a_field_error()
    {
        var invalidDir = Path.Combine(ClusterFixture.RepoRoot, "tests", "Lowbit.Api.Tests", "invalid");
        var crdDir = Path.Combine(ClusterFixture.RepoRoot, "crds");
        Assert.True(Directory.Exists(invalidDir) && Directory.Exists(crdDir), "the repository's crds/ and tests/Lowbit.Api.Tests/invalid/ are needed");
        await _cluster.Kubectl("apply", "-f", crdDir);
        var ns = await NewNamespaceAsync("invalid");
        var result = await _cluster.KubectlAsync("apply", "-n", ns, "-f", invalidDir);
        Assert.NotEqual(0, result.ExitCode);
        var files = Directory.GetFiles(invalidDir, "*.yaml");
        var rejected = result.StdErr.Split("\n").Where(l => l.Contains("(Invalid)", StringComparison.Ordinal) && l.Contains("is invalid: ", StringComparison.Ordinal)).ToList();
        Assert.Equal(files.Length, rejected.Count);
        foreach (var type in _cluster.Server.Api.Resources.All.Where(t => t.Group == "lowbit.dev"))
        {
            Assert.Empty(_cluster.Server.Api.List(type, ns).Items);
        }
    }

    [Fact]
    public async Task Does_show_a_later_change_when_get_watch_runs()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("watch");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        using var watch = _cluster.StartKubectl("get", "widgets", "-n", ns, "-w", "--output-watch-events");
        await watch.WaitForLineAsync(l => l.Contains("ADDED", StringComparison.Ordinal) && l.Contains("w1", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        await _cluster.Kubectl("patch", "widget", "w1", "-n", ns, "--type=merge", "-p", "{\"spec\":{\"size\":\"large\"}}");
        var line = await watch.WaitForLineAsync(l => l.Contains("MODIFIED", StringComparison.Ordinal), TimeSpan.FromSeconds(30));
        Assert.Contains("large", line, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_finish_wait_for_condition_when_status_subresource_sets_ready()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("wait");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        var wait = _cluster.KubectlAsync("wait", "--for=condition=Ready", "widget/w1", "-n", ns, "--timeout=30s");
        var generation = (long?)_cluster.Server.Api.Get(Widgets, ns, "w1")["metadata"]!["generation"];
        await _cluster.Kubectl("patch", "widget", "w1", "-n", ns, "--subresource=status", "--type=merge", "-p",
            "{\"status\":{\"conditions\":[{\"type\":\"Ready\",\"status\":\"True\",\"reason\":\"Done\",\"message\":\"ok\",\"lastTransitionTime\":\"2026-01-01T00:00:00Z\"}]}}");
        var result = await wait;
        Assert.True(result.ExitCode == 0, result.StdErr);
        Assert.Contains("condition met", result.StdOut, StringComparison.Ordinal);
        var after = _cluster.Server.Api.Get(Widgets, ns, "w1");
        Assert.Equal(generation, (long?)after["metadata"]!["generation"]);
        Assert.Matches(@"w1\s+medium\s+True", await _cluster.Kubectl("get", "widget", "w1", "-n", ns));
    }

    private ResourceType Widgets => _cluster.Server.Api.Resources.Find("test.lowbit.dev", "v1", "widgets")!;

    [Fact]
    public async Task Does_patch_deployments_with_merge_json_and_strategic_patches()
    {
        var ns = await NewNamespaceAsync("patch");
        var manifest = Path.Combine(Path.GetTempPath(), $"deploy-{ns}.yaml");
        await File.WriteAllTextAsync(manifest, """
            apiVersion: apps/v1
            kind: Deployment
            metadata:
              name: web
            spec:
              replicas: 1
              selector:
                matchLabels: {app: web}
              template:
                metadata:
                  labels: {app: web}
                spec:
                  containers:
                  - name: web
                    image: nginx:1.25
                    env:
                    - {name: A, value: "1"}
                  - name: sidecar
                    image: busybox:1.36
            """);
        await _cluster.Kubectl("apply", "-n", ns, "-f", manifest);
        await _cluster.Kubectl("patch", "deployment", "web", "-n", ns, "--type=strategic", "-p",
            "{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"web\",\"env\":[{\"name\":\"B\",\"value\":\"2\"}]}]}}}}");
        await _cluster.Kubectl("patch", "deployment", "web", "-n", ns, "--type=json", "-p", "[{\"op\":\"replace\",\"path\":\"/spec/replicas\",\"value\":3}]");
        await _cluster.Kubectl("patch", "deployment", "web", "-n", ns, "--type=merge", "-p", "{\"metadata\":{\"annotations\":{\"team\":\"ml\"}}}");
        var deployment = _cluster.Server.Api.Get(BuiltinResources.Deployments, ns, "web");
        var containers = deployment["spec"]!["template"]!["spec"]!["containers"]!.AsArray();
        Assert.Equal(2, containers.Count);
        Assert.Equal("A,B", string.Join(",", containers[0]!["env"]!.AsArray().Select(e => (string?)e!["name"])));
        Assert.Equal(3, (int?)deployment["spec"]!["replicas"]);
        Assert.Equal("ml", (string?)deployment["metadata"]!["annotations"]!["team"]);
        Assert.Equal(3, (long?)deployment["metadata"]!["generation"]);
        var table = await _cluster.Kubectl("get", "deploy", "web", "-n", ns);
        Assert.Matches(@"NAME\s+READY\s+UP-TO-DATE\s+AVAILABLE\s+AGE", table);
    }

    [Fact]
    public async Task Does_label_and_annotate_without_bumping_generation()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("label");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        await _cluster.Kubectl("label", "widget", "w1", "-n", ns, "tier=gold");
        await _cluster.Kubectl("annotate", "widget", "w1", "-n", ns, "note=hello");
        var selected = await _cluster.Kubectl("get", "widgets", "-n", ns, "-l", "tier in (gold,silver)", "-o", "name");
        Assert.Equal("widget.test.lowbit.dev/w1", selected.Trim());
        var none = await _cluster.Kubectl("get", "widgets", "-n", ns, "-l", "tier!=gold", "-o", "name");
        Assert.Equal("", none.Trim());
        var obj = _cluster.Server.Api.Get(Widgets, ns, "w1");
        Assert.Equal("hello", (string?)obj["metadata"]!["annotations"]!["note"]);
        Assert.Equal(1, (long?)obj["metadata"]!["generation"]);
    }

    [Fact]
    public async Task Does_keep_object_until_finalizer_removed_when_deleted()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("fin");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        await _cluster.Kubectl("patch", "widget", "w1", "-n", ns, "--type=merge", "-p", "{\"metadata\":{\"finalizers\":[\"test.lowbit.dev/cleanup\"]}}");
        await _cluster.Kubectl("delete", "widget", "w1", "-n", ns, "--wait=false");
        var pending = _cluster.Server.Api.Get(Widgets, ns, "w1");
        Assert.NotNull(pending["metadata"]!["deletionTimestamp"]);
        await _cluster.Kubectl("patch", "widget", "w1", "-n", ns, "--type=json", "-p", "[{\"op\":\"remove\",\"path\":\"/metadata/finalizers\"}]");
        Assert.Null(_cluster.Server.Api.TryGet(Widgets, ns, "w1"));
        var missing = await _cluster.KubectlAsync("get", "widget", "w1", "-n", ns);
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("NotFound", missing.StdErr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_delete_immediately_without_finalizers()
    {
        var ns = await NewNamespaceAsync("del");
        await _cluster.Kubectl("create", "configmap", "plain", "-n", ns, "--from-literal=a=b");
        var deleted = await _cluster.Kubectl("delete", "configmap", "plain", "-n", ns);
        Assert.Contains("configmap \"plain\" deleted", deleted, StringComparison.Ordinal);
        Assert.Null(_cluster.Server.Api.TryGet(BuiltinResources.ConfigMaps, ns, "plain"));
    }

    [Fact]
    public async Task Does_remove_owned_children_before_owner_when_cascade_is_foreground()
    {
        var ns = await NewNamespaceAsync("cascade");
        var api = _cluster.Server.Api;
        var owner = api.Create(BuiltinResources.ConfigMaps, ns, JsonNode.Parse("""{"metadata":{"name":"owner"}}""")!.AsObject());
        var ownerRef = new JsonObject
        {
            ["apiVersion"] = "v1",
            ["kind"] = "ConfigMap",
            ["name"] = "owner",
            ["uid"] = (string?)owner["metadata"]!["uid"],
            ["controller"] = true,
            ["blockOwnerDeletion"] = true,
        };
        foreach (var child in new[] { "child-a", "child-b" })
        {
            api.Create(BuiltinResources.Secrets, ns, new JsonObject
            {
                ["metadata"] = new JsonObject { ["name"] = child, ["ownerReferences"] = new JsonArray(ownerRef.DeepClone()) },
            });
        }
        await _cluster.Kubectl("delete", "configmap", "owner", "-n", ns, "--cascade=foreground", "--timeout=30s");
        await api.GarbageCollector.IdleAsync();
        Assert.Null(api.TryGet(BuiltinResources.ConfigMaps, ns, "owner"));
        Assert.Null(api.TryGet(BuiltinResources.Secrets, ns, "child-a"));
        Assert.Null(api.TryGet(BuiltinResources.Secrets, ns, "child-b"));
    }

    [Fact]
    public async Task Does_scale_custom_resources_and_deployments_through_the_scale_subresource()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("scale");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        var scaled = await _cluster.Kubectl("scale", "widget", "w1", "-n", ns, "--replicas=3");
        Assert.Contains("widget.test.lowbit.dev/w1 scaled", scaled, StringComparison.Ordinal);
        Assert.Equal(3, (int?)_cluster.Server.Api.Get(Widgets, ns, "w1")["spec"]!["replicas"]);
        var manifest = Path.Combine(Path.GetTempPath(), $"scale-{ns}.yaml");
        await File.WriteAllTextAsync(manifest, """
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: web}
            spec:
              selector: {matchLabels: {app: web}}
              template:
                metadata: {labels: {app: web}}
                spec: {containers: [{name: web, image: "nginx:1.25"}]}
            """);
        await _cluster.Kubectl("apply", "-n", ns, "-f", manifest);
        await _cluster.Kubectl("scale", "deployment", "web", "-n", ns, "--replicas=4");
        Assert.Equal(4, (int?)_cluster.Server.Api.Get(BuiltinResources.Deployments, ns, "web")["spec"]!["replicas"]);
    }

    [Fact]
    public async Task Does_serve_pod_logs_written_by_the_executor()
    {
        var ns = await NewNamespaceAsync("logs");
        _cluster.Server.Api.Create(BuiltinResources.Pods, ns, JsonNode.Parse("""{"metadata":{"name":"runner"},"spec":{"containers":[{"name":"main","image":"lowbit-engine"}]}}""")!.AsObject());
        _cluster.Server.Logs.Append(ns, "runner", "main", "line one\nline two\n");
        var logs = await _cluster.Kubectl("logs", "runner", "-n", ns);
        Assert.Equal("line one\nline two\n", logs);
        var tail = await _cluster.Kubectl("logs", "runner", "-n", ns, "--tail=1");
        Assert.Equal("line two\n", tail);
    }

    [Fact]
    public async Task Does_show_events_of_an_object_when_kubectl_describe_runs()
    {
        await InstallWidgetsAsync();
        var ns = await NewNamespaceAsync("describe");
        await _cluster.Kubectl("apply", "-n", ns, "-f", Fixture("widget.yaml"));
        var uid = (string?)_cluster.Server.Api.Get(Widgets, ns, "w1")["metadata"]!["uid"];
        _cluster.Server.Api.Create(BuiltinResources.Events, ns, JsonNode.Parse($$"""
            {"metadata":{"name":"w1.1"},"type":"Warning","reason":"WaitingForGPU","message":"0/1 nodes are available",
             "involvedObject":{"apiVersion":"test.lowbit.dev/v1","kind":"Widget","name":"w1","namespace":"{{ns}}","uid":"{{uid}}"},
             "source":{"component":"lowbit-operator"},"count":1}
            """)!.AsObject());
        var described = await _cluster.Kubectl("describe", "widget", "w1", "-n", ns);
        Assert.Matches(@"Warning\s+WaitingForGPU", described);
        var events = await _cluster.Kubectl("get", "events", "-n", ns);
        Assert.Contains("widget/w1", events, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_explain_a_crd_field_from_openapi_v3()
    {
        await InstallWidgetsAsync();
        var explained = await _cluster.Kubectl("explain", "widgets.spec.size");
        Assert.Contains("KIND:       Widget", explained, StringComparison.Ordinal);
        Assert.Contains("How big the widget is.", explained, StringComparison.Ordinal);
        Assert.Contains("medium", explained, StringComparison.Ordinal);
    }
}
