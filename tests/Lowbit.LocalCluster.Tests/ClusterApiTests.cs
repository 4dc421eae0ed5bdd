using System.Text.Json.Nodes;
using k8s.Models;
using Lowbit.LocalCluster.Patching;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The in-process store and its API semantics, without HTTP.</summary>
public sealed class ClusterApiTests : IDisposable
{
    private readonly ClusterApi _api = new();

    public void Dispose() => _api.GarbageCollector.Dispose();

    private static JsonObject Obj(string json) => JsonNode.Parse(json)!.AsObject();

    private ResourceType InstallWidgets()
    {
        var crd = Lowbit.Schema.Yaml.ParseObject(File.ReadAllText(Path.Combine(ClusterFixture.FixturesDir, "widgets-crd.yaml")));
        _api.Create(BuiltinResources.CustomResourceDefinitions, null, crd);
        return _api.Resources.Find("test.lowbit.dev", "v1", "widgets")!;
    }

    [Fact]
    public void Does_select_by_label_operators()
    {
        foreach (var (name, tier) in new[] { ("a", "gold"), ("b", "silver"), ("c", "") })
        {
            var labels = tier.Length == 0 ? "{}" : $"{{\"tier\":\"{tier}\"}}";
            _api.Create(BuiltinResources.ConfigMaps, "default", Obj($"{{\"metadata\":{{\"name\":\"{name}\",\"labels\":{labels}}}}}"));
        }
        string Names(string selector) => string.Join(",", _api.List(BuiltinResources.ConfigMaps, "default", new ListOptions { LabelSelector = selector }).Items.Select(i => i.Name));
        Assert.Equal("a", Names("tier=gold"));
        Assert.Equal("a", Names("tier==gold"));
        Assert.Equal("b,c", Names("tier!=gold"));
        Assert.Equal("a,b", Names("tier in (gold, silver)"));
        Assert.Equal("c", Names("tier notin (gold,silver)"));
        Assert.Equal("a,b", Names("tier"));
        Assert.Equal("c", Names("!tier"));
        var bad = Assert.Throws<ApiException>(() => Names("tier in gold)"));
        Assert.Equal(400, bad.Code);
    }

    [Fact]
    public void Does_select_pods_by_node_name_and_phase_and_reject_unknown_fields()
    {
        _api.Create(BuiltinResources.Pods, "default", Obj("""{"metadata":{"name":"p1"},"spec":{"nodeName":"n1","containers":[{"name":"c","image":"i"}]}}"""));
        _api.Create(BuiltinResources.Pods, "default", Obj("""{"metadata":{"name":"p2"},"spec":{"containers":[{"name":"c","image":"i"}]}}"""));
        Assert.Equal("p1", Assert.Single(_api.List(BuiltinResources.Pods, null, new ListOptions { FieldSelector = "spec.nodeName=n1" }).Items).Name);
        Assert.Equal(2, _api.List(BuiltinResources.Pods, "default", new ListOptions { FieldSelector = "status.phase=Pending" }).Items.Count);
        Assert.Equal("p2", Assert.Single(_api.List(BuiltinResources.Pods, "default", new ListOptions { FieldSelector = "metadata.name!=p1,metadata.namespace=default" }).Items).Name);
        Assert.Equal(400, Assert.Throws<ApiException>(() => _api.List(BuiltinResources.Pods, "default", new ListOptions { FieldSelector = "spec.bogus=x" })).Code);
    }

    [Fact]
    public void Does_page_lists_with_limit_and_continue()
    {
        for (var i = 0; i < 5; i++)
        {
            _api.Create(BuiltinResources.Secrets, "default", Obj($"{{\"metadata\":{{\"name\":\"s{i}\"}}}}"));
        }
        var first = _api.List(BuiltinResources.Secrets, "default", new ListOptions { Limit = 2 });
        Assert.Equal(["s0", "s1"], first.Items.Select(i => i.Name));
        Assert.Equal(3, first.RemainingItemCount);
        var second = _api.List(BuiltinResources.Secrets, "default", new ListOptions { Limit = 2, Continue = first.Continue });
        Assert.Equal(["s2", "s3"], second.Items.Select(i => i.Name));
        Assert.Equal(first.ResourceVersion, second.ResourceVersion);
        var last = _api.List(BuiltinResources.Secrets, "default", new ListOptions { Limit = 2, Continue = second.Continue });
        Assert.Equal(["s4"], last.Items.Select(i => i.Name));
        Assert.Null(last.Continue);
    }

    [Fact]
    public void Does_default_prune_and_validate_custom_resources_with_the_crd_schema()
    {
        var widgets = InstallWidgets();
        var created = _api.Create(widgets, "default", Obj("""{"apiVersion":"test.lowbit.dev/v1","kind":"Widget","metadata":{"name":"w"},"spec":{"unknown":1}}"""));
        Assert.Equal("small", (string?)created["spec"]!["size"]);
        Assert.Equal(1, (int?)created["spec"]!["replicas"]);
        Assert.Null(created["spec"]!["unknown"]);
        var invalid = Assert.Throws<ApiException>(() => _api.Create(widgets, "default",
            Obj("""{"metadata":{"name":"bad"},"spec":{"size":"huge","replicas":-1}}""")));
        Assert.Equal(422, invalid.Code);
        Assert.Equal("Invalid", invalid.Reason);
        Assert.Contains(invalid.Causes, c => c.Field == "spec.size" && c.Reason == "FieldValueNotSupported");
        Assert.Contains(invalid.Causes, c => c.Field == "spec.replicas");
        Assert.Equal("Invalid", invalid.ToStatus()["reason"]!.GetValue<string>());
    }

    [Fact]
    public void Does_bump_generation_on_spec_changes_only()
    {
        var widgets = InstallWidgets();
        _api.Create(widgets, "default", Obj("""{"metadata":{"name":"w"},"spec":{"size":"small"}}"""));
        var labelled = _api.Patch(widgets, "default", "w", PatchKind.Merge, """{"metadata":{"labels":{"a":"b"}}}""");
        Assert.Equal(1, (long?)labelled["metadata"]!["generation"]);
        var status = _api.Patch(widgets, "default", "w", PatchKind.Merge, """{"status":{"replicas":3}}""", subresource: "status");
        Assert.Equal(1, (long?)status["metadata"]!["generation"]);
        Assert.Equal(3, (int?)status["status"]!["replicas"]);
        var ignored = _api.Patch(widgets, "default", "w", PatchKind.Merge, """{"status":{"replicas":9}}""");
        Assert.Equal(3, (int?)ignored["status"]!["replicas"]);
        var spec = _api.Patch(widgets, "default", "w", PatchKind.Merge, """{"spec":{"size":"large"}}""");
        Assert.Equal(2, (long?)spec["metadata"]!["generation"]);
    }

    [Fact]
    public void Does_require_resource_version_when_replacing_a_custom_resource()
    {
        var widgets = InstallWidgets();
        var created = _api.Create(widgets, "default", Obj("""{"metadata":{"name":"w"},"spec":{}}"""));
        created["metadata"]!.AsObject().Remove("resourceVersion");
        var ex = Assert.Throws<ApiException>(() => _api.Update(widgets, "default", "w", created));
        Assert.Equal(422, ex.Code);
        Assert.Equal("metadata.resourceVersion", Assert.Single(ex.Causes).Field);
    }

    [Fact]
    public void Does_not_write_when_an_update_changes_nothing()
    {
        var created = _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"same"},"data":{"a":"1"}}"""));
        var again = _api.Update(BuiltinResources.ConfigMaps, "default", "same", created);
        Assert.Equal((string?)created["metadata"]!["resourceVersion"], (string?)again["metadata"]!["resourceVersion"]);
    }

    [Fact]
    public void Does_apply_idempotently_and_remove_fields_the_manager_no_longer_applies()
    {
        var desired = new V1ConfigMap
        {
            Metadata = new V1ObjectMeta { Name = "applied", NamespaceProperty = "default", Labels = new Dictionary<string, string> { ["x"] = "1" } },
            Data = new Dictionary<string, string> { ["a"] = "1", ["b"] = "2" },
        };
        var first = _api.Apply(desired, "lowbit-operator");
        var second = _api.Apply(desired, "lowbit-operator");
        Assert.Equal(first.Metadata.ResourceVersion, second.Metadata.ResourceVersion);
        _api.Patch<V1ConfigMap>("default", "applied", PatchKind.Merge, """{"data":{"c":"user"}}""", new WriteOptions { FieldManager = "kubectl" });
        desired.Data.Remove("b");
        var third = _api.Apply(desired, "lowbit-operator");
        Assert.Equal(new Dictionary<string, string> { ["a"] = "1", ["c"] = "user" }, third.Data);
        Assert.Contains(third.Metadata.ManagedFields, m => m.Manager == "lowbit-operator" && m.Operation == "Apply");
    }

    [Fact]
    public void Does_merge_containers_env_ports_and_conditions_by_key_in_strategic_patches()
    {
        var pod = Obj("""
            {"metadata":{"name":"p"},"spec":{"containers":[
              {"name":"a","image":"i","env":[{"name":"X","value":"1"}],"ports":[{"containerPort":80}]},
              {"name":"b","image":"j"}]},
             "status":{"conditions":[{"type":"Ready","status":"False"}]}}
            """);
        var patch = Obj("""
            {"spec":{"containers":[{"name":"a","env":[{"name":"Y","value":"2"},{"name":"X","$patch":"delete"}],"ports":[{"containerPort":81}]},
                                    {"name":"b","$patch":"delete"}],
                     "$setElementOrder/containers":[{"name":"a"}]},
             "status":{"conditions":[{"type":"Ready","status":"True"}]}}
            """);
        var result = StrategicMergePatch.Apply(pod, patch);
        var containers = result["spec"]!["containers"]!.AsArray();
        var a = Assert.Single(containers)!;
        Assert.Equal("Y", Assert.Single(a["env"]!.AsArray())!["name"]!.GetValue<string>());
        Assert.Equal(2, a["ports"]!.AsArray().Count);
        Assert.Equal("True", result["status"]!["conditions"]![0]!["status"]!.GetValue<string>());
        Assert.Null(result["spec"]!["$setElementOrder/containers"]);
    }

    [Fact]
    public async Task Does_collect_dependents_when_owner_is_deleted_in_background_and_keep_them_when_orphaned()
    {
        var owner = _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"owner"}}"""));
        var uid = (string)owner["metadata"]!["uid"]!;
        JsonObject Child(string name) => new()
        {
            ["metadata"] = new JsonObject
            {
                ["name"] = name,
                ["ownerReferences"] = new JsonArray(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "ConfigMap", ["name"] = "owner", ["uid"] = uid }),
            },
        };
        _api.Create(BuiltinResources.Secrets, "default", Child("bg-child"));
        _api.Delete(BuiltinResources.ConfigMaps, "default", "owner");
        await _api.GarbageCollector.IdleAsync();
        Assert.Null(_api.TryGet(BuiltinResources.Secrets, "default", "bg-child"));

        var owner2 = _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"owner"}}"""));
        uid = (string)owner2["metadata"]!["uid"]!;
        _api.Create(BuiltinResources.Secrets, "default", Child("orphan"));
        _api.Delete(BuiltinResources.ConfigMaps, "default", "owner", new DeleteOptions { PropagationPolicy = PropagationPolicy.Orphan });
        await _api.GarbageCollector.IdleAsync();
        var orphan = _api.Get(BuiltinResources.Secrets, "default", "orphan");
        Assert.Null(orphan["metadata"]!["ownerReferences"]);
    }

    [Fact]
    public async Task Does_collect_an_object_created_after_its_only_owner_was_deleted()
    {
        var owner = _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"late-owner"}}"""));
        var uid = (string)owner["metadata"]!["uid"]!;
        _api.Delete(BuiltinResources.ConfigMaps, "default", "late-owner");
        await _api.GarbageCollector.IdleAsync();
        // A controller's create racing the owner's deletion: the owner uid no longer exists.
        _api.Create(BuiltinResources.Secrets, "default", new JsonObject
        {
            ["metadata"] = new JsonObject
            {
                ["name"] = "late-child",
                ["ownerReferences"] = new JsonArray(new JsonObject { ["apiVersion"] = "v1", ["kind"] = "ConfigMap", ["name"] = "late-owner", ["uid"] = uid }),
            },
        });
        await _api.GarbageCollector.IdleAsync();
        Assert.Null(_api.TryGet(BuiltinResources.Secrets, "default", "late-child"));
    }

    [Fact]
    public async Task Does_empty_and_remove_a_deleted_namespace()
    {
        _api.Create(BuiltinResources.Namespaces, null, Obj("""{"metadata":{"name":"doomed"}}"""));
        _api.Create(BuiltinResources.ConfigMaps, "doomed", Obj("""{"metadata":{"name":"x"}}"""));
        _api.Delete(BuiltinResources.Namespaces, null, "doomed");
        var refused = Assert.Throws<ApiException>(() => _api.Create(BuiltinResources.ConfigMaps, "doomed", Obj("""{"metadata":{"name":"y"}}""")));
        Assert.True(refused.Code is 403 or 404);
        await _api.GarbageCollector.IdleAsync();
        Assert.Null(_api.TryGet(BuiltinResources.ConfigMaps, "doomed", "x"));
        Assert.Null(_api.TryGet(BuiltinResources.Namespaces, null, "doomed"));
    }

    [Fact]
    public void Does_not_store_anything_on_dry_run()
    {
        var rv = _api.CurrentResourceVersion;
        var result = _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"dry"}}"""), new WriteOptions { DryRun = true });
        Assert.Equal("dry", (string?)result["metadata"]!["name"]);
        Assert.Null(_api.TryGet(BuiltinResources.ConfigMaps, "default", "dry"));
        Assert.Equal(rv, _api.CurrentResourceVersion);
    }

    [Fact]
    public async Task Does_turn_selector_changes_into_added_and_deleted_watch_events()
    {
        _api.Create(BuiltinResources.ConfigMaps, "default", Obj("""{"metadata":{"name":"m","labels":{"on":"no"}}}"""));
        var from = _api.CurrentResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture);
        _api.Patch(BuiltinResources.ConfigMaps, "default", "m", PatchKind.Merge, """{"metadata":{"labels":{"on":"yes"}}}""");
        _api.Patch(BuiltinResources.ConfigMaps, "default", "m", PatchKind.Merge, """{"metadata":{"labels":{"on":"no"}}}""");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var types = new List<WatchEventKind>();
        await foreach (var e in _api.WatchAsync(BuiltinResources.ConfigMaps, "default", new WatchOptions { ResourceVersion = from, LabelSelector = "on=yes" }, cts.Token))
        {
            types.Add(e.Type);
            if (types.Count == 2)
            {
                break;
            }
        }
        Assert.Equal([WatchEventKind.Added, WatchEventKind.Deleted], types);
    }

    [Fact]
    public async Task Does_disconnect_a_watcher_that_falls_too_far_behind()
    {
        using var api = new ApiHolder(new ClusterApi(new ClusterApiOptions { MaxPendingWatchEvents = 3 }));
        await using var watch = api.Api.WatchAsync(BuiltinResources.ConfigMaps, "default", new WatchOptions { ResourceVersion = api.Api.CurrentResourceVersion.ToString(System.Globalization.CultureInfo.InvariantCulture) }).GetAsyncEnumerator();
        var pending = watch.MoveNextAsync();
        for (var i = 0; i < 10; i++)
        {
            api.Api.Create(BuiltinResources.ConfigMaps, "default", Obj($"{{\"metadata\":{{\"name\":\"c{i}\"}}}}"));
        }
        var received = 0;
        while (await pending)
        {
            received++;
            pending = watch.MoveNextAsync();
        }
        Assert.InRange(received, 1, 4);
    }

    private sealed class ApiHolder(ClusterApi api) : IDisposable
    {
        public ClusterApi Api { get; } = api;

        public void Dispose() => Api.GarbageCollector.Dispose();
    }

    [Fact]
    public void Does_drop_a_crd_resource_and_its_objects_when_the_crd_is_deleted()
    {
        var widgets = InstallWidgets();
        _api.Create(widgets, "default", Obj("""{"metadata":{"name":"w"},"spec":{}}"""));
        _api.Delete(BuiltinResources.CustomResourceDefinitions, null, "widgets.test.lowbit.dev");
        Assert.Null(_api.Resources.Find("test.lowbit.dev", "v1", "widgets"));
        var reinstalled = InstallWidgets();
        Assert.Empty(_api.List(reinstalled, null).Items);
    }
}
