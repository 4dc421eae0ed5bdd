using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests.Cluster;

/// <summary>
/// The imperative <c>kubectl create &lt;kind&gt;</c> commands, whose typed clients send protobuf bodies, against the embedded
/// server with simulated nodes: each asserts the object as stored.
/// </summary>
public sealed class KubectlCreateTests : IClassFixture<WorkloadClusterFixture>
{
    private readonly WorkloadClusterFixture _cluster;

    public KubectlCreateTests(WorkloadClusterFixture cluster) => _cluster = cluster;

    private ClusterApi Api => _cluster.Server.Api;

    [Fact]
    public async Task Does_run_the_pods_of_a_deployment_that_kubectl_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-deploy");

        var output = await _cluster.Kubectl("create", "deployment", "web", "--image=nginx", "--replicas=3", "--port=80", "-n", ns);

        Assert.Equal("deployment.apps/web created", output.Trim());
        var spec = Api.Get(BuiltinResources.Deployments, ns, "web")["spec"]!;
        Assert.Equal(3, (int)spec["replicas"]!);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"matchLabels":{"app":"web"}}"""), spec["selector"]));
        Assert.Equal("web", (string?)spec["template"]!["metadata"]!["labels"]!["app"]);
        var container = spec["template"]!["spec"]!["containers"]![0]!;
        Assert.Equal("nginx", (string?)container["name"]);
        Assert.Equal("nginx", (string?)container["image"]);
        Assert.Equal(80, (int)container["ports"]![0]!["containerPort"]!);
        Assert.False(container["ports"]![0]!.AsObject().ContainsKey("hostPort"));
        Assert.Equal("RollingUpdate", (string?)spec["strategy"]!["type"]);

        await _cluster.Kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s");
        var pods = Api.List<k8s.Models.V1Pod>(ns, new ListOptions { LabelSelector = "app=web" })
            .Where(p => p.Metadata.DeletionTimestamp is null).ToList();
        Assert.Equal(3, pods.Count);
        Assert.All(pods, p => Assert.StartsWith("sim", p.Spec.NodeName, StringComparison.Ordinal));
        Assert.All(pods, p => Assert.Equal("Running", p.Status.Phase));
    }

    [Fact]
    public async Task Does_complete_a_job_that_kubectl_creates_with_a_command()
    {
        var ns = await _cluster.NamespaceAsync("create-job");

        await _cluster.Kubectl("create", "job", "j", "--image=busybox", "-n", ns, "--", "echo", "hi");

        var pod = Api.Get(BuiltinResources.Jobs, ns, "j")["spec"]!["template"]!["spec"]!;
        Assert.Equal("Never", (string?)pod["restartPolicy"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""["echo","hi"]"""), pod["containers"]![0]!["command"]));
        Assert.Equal("busybox", (string?)pod["containers"]![0]!["image"]);
        await _cluster.Kubectl("wait", "--for=condition=complete", "job/j", "-n", ns, "--timeout=30s");
    }

    [Fact]
    public async Task Does_store_a_cronjob_that_kubectl_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-cron");

        await _cluster.Kubectl("create", "cronjob", "c", "--image=busybox", "--schedule=*/1 * * * *", "--restart=OnFailure", "-n", ns, "--", "date");

        var spec = Api.Get(BuiltinResources.CronJobs, ns, "c")["spec"]!;
        Assert.Equal("*/1 * * * *", (string?)spec["schedule"]);
        Assert.Equal("c", (string?)spec["jobTemplate"]!["metadata"]!["name"]);
        var pod = spec["jobTemplate"]!["spec"]!["template"]!["spec"]!;
        Assert.Equal("OnFailure", (string?)pod["restartPolicy"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""[{"name":"c","image":"busybox","command":["date"]}]"""), RemoveDefaults(pod["containers"])));
        Assert.Equal("*/1 * * * *", await _cluster.Kubectl("get", "cronjob", "c", "-n", ns, "-o", "jsonpath={.spec.schedule}"));

        await _cluster.Kubectl("create", "job", "manual", "--from=cronjob/c", "-n", ns);

        var job = Api.Get(BuiltinResources.Jobs, ns, "manual")["metadata"]!;
        var owner = JsonNode.Parse($$"""
            [ { "apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "{{(string?)Api.Get(BuiltinResources.CronJobs, ns, "c")["metadata"]!["uid"]}}", "controller": true } ]
            """);
        Assert.True(JsonNode.DeepEquals(owner, job["ownerReferences"]), job["ownerReferences"]?.ToJsonString());
        Assert.Equal("manual", (string?)job["annotations"]!["cronjob.kubernetes.io/instantiate"]);
    }

    [Fact]
    public async Task Does_store_the_ports_of_a_clusterip_service_that_kubectl_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-svc");

        await _cluster.Kubectl("create", "service", "clusterip", "s", "--tcp=80:8080,8443:https", "-n", ns);

        var spec = Api.Get(BuiltinResources.Services, ns, "s")["spec"]!;
        var expected = JsonNode.Parse("""
            [ { "name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080 },
              { "name": "8443-https", "protocol": "TCP", "port": 8443, "targetPort": "https" } ]
            """);
        Assert.True(JsonNode.DeepEquals(expected, spec["ports"]), spec["ports"]!.ToJsonString());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"app":"s"}"""), spec["selector"]));
        Assert.Equal("ClusterIP", (string?)spec["type"]);
        Assert.StartsWith("10.96.", (string?)spec["clusterIP"], StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_store_the_rbac_objects_that_kubectl_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-rbac");

        await _cluster.Kubectl("create", "serviceaccount", "robot", "-n", ns);
        await _cluster.Kubectl("create", "role", "reader", "--verb=get,list", "--resource=pods,deployments.apps", "-n", ns);
        await _cluster.Kubectl("create", "rolebinding", "reader-binding", "--role=reader", "--user=alice", $"--serviceaccount={ns}:robot", "-n", ns);
        await _cluster.Kubectl("create", "clusterrole", $"nodes-{ns}", "--verb=get,watch", "--resource=nodes");
        await _cluster.Kubectl("create", "clusterrolebinding", $"nodes-{ns}", $"--clusterrole=nodes-{ns}", "--group=devs");

        Assert.Equal("robot", (string?)Api.Get(BuiltinResources.ServiceAccounts, ns, "robot")["metadata"]!["name"]);
        var rules = Api.Get(BuiltinResources.Roles, ns, "reader")["rules"]!.AsArray();
        Assert.Contains(rules, r => JsonNode.DeepEquals(JsonNode.Parse("""{"verbs":["get","list"],"apiGroups":[""],"resources":["pods"]}"""), r));
        Assert.Contains(rules, r => JsonNode.DeepEquals(JsonNode.Parse("""{"verbs":["get","list"],"apiGroups":["apps"],"resources":["deployments"]}"""), r));
        var binding = Api.Get(BuiltinResources.RoleBindings, ns, "reader-binding");
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"reader"}"""), binding["roleRef"]));
        var subjects = JsonNode.Parse($$"""
            [ { "kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice" },
              { "kind": "ServiceAccount", "name": "robot", "namespace": "{{ns}}" } ]
            """);
        Assert.True(JsonNode.DeepEquals(subjects, binding["subjects"]), binding["subjects"]!.ToJsonString());
        var clusterRole = Api.Get(BuiltinResources.ClusterRoles, null, $"nodes-{ns}");
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""[{"verbs":["get","watch"],"apiGroups":[""],"resources":["nodes"]}]"""), clusterRole["rules"]));
        var clusterBinding = Api.Get(BuiltinResources.ClusterRoleBindings, null, $"nodes-{ns}");
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""[{"kind":"Group","apiGroup":"rbac.authorization.k8s.io","name":"devs"}]"""), clusterBinding["subjects"]));
        Assert.Equal("ClusterRole", (string?)clusterBinding["roleRef"]!["kind"]);
    }

    [Fact]
    public async Task Does_store_the_priority_class_disruption_budgets_and_quota_that_kubectl_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-policy");

        await _cluster.Kubectl("create", "priorityclass", $"low-{ns}", "--value=-5", "--description=below default", "--preemption-policy=Never");
        await _cluster.Kubectl("create", "pdb", "p", "--selector=app=web", "--min-available=1", "-n", ns);
        await _cluster.Kubectl("create", "pdb", "half", "--selector=app=web", "--max-unavailable=50%", "-n", ns);
        await _cluster.Kubectl("create", "quota", "q", "--hard=cpu=1,pods=2", "-n", ns);

        var priority = Api.Get(BuiltinResources.PriorityClasses, null, $"low-{ns}");
        Assert.Equal(-5, (int)priority["value"]!);
        Assert.Equal("below default", (string?)priority["description"]);
        Assert.Equal("Never", (string?)priority["preemptionPolicy"]);
        Assert.False(priority.ContainsKey("globalDefault"));
        var pdb = Api.Get(BuiltinResources.PodDisruptionBudgets, ns, "p")["spec"]!;
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"minAvailable":1,"selector":{"matchLabels":{"app":"web"}}}"""), pdb), pdb.ToJsonString());
        Assert.Equal("50%", (string?)Api.Get(BuiltinResources.PodDisruptionBudgets, ns, "half")["spec"]!["maxUnavailable"]);
        var quota = Api.Get(BuiltinResources.ResourceQuotas, ns, "q")["spec"]!;
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"hard":{"cpu":"1","pods":"2"}}"""), quota), quota.ToJsonString());
    }

    [Fact]
    public async Task Does_store_the_autoscaler_that_kubectl_autoscale_creates()
    {
        var ns = await _cluster.NamespaceAsync("create-hpa");
        await _cluster.Kubectl("create", "deployment", "web", "--image=nginx", "-n", ns);

        await _cluster.Kubectl("autoscale", "deployment", "web", "--min=2", "--max=5", "--cpu-percent=70", "-n", ns);

        var spec = Api.Get(BuiltinResources.HorizontalPodAutoscalers, ns, "web")["spec"]!;
        var expected = JsonNode.Parse("""
            {
              "scaleTargetRef": { "kind": "Deployment", "name": "web", "apiVersion": "apps/v1" },
              "minReplicas": 2, "maxReplicas": 5,
              "metrics": [ { "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 70 } } } ]
            }
            """);
        Assert.True(JsonNode.DeepEquals(expected, spec), spec.ToJsonString());
    }

    /// <summary>
    /// What the server stored from kubectl's protobuf body holds everything kubectl's own JSON encoding of the same object
    /// (<c>--dry-run=client -o json</c>) holds, so a wrong field number or kind in the schema table shows up as a difference.
    /// </summary>
    [Theory]
    [InlineData("create|deployment|web|--image=nginx:1.27|--replicas=2|--port=8080", "deployment/web", true)]
    [InlineData("create|deployment|idle|--image=nginx|--replicas=0", "deployment/idle", true)]
    [InlineData("create|job|j|--image=busybox|--|sh|-c|echo hi", "job/j", true)]
    [InlineData("create|cronjob|c|--image=busybox|--schedule=0 3 * * *|--|date", "cronjob/c", true)]
    [InlineData("create|service|clusterip|s|--tcp=80:8080|--tcp=53:dns", "service/s", true)]
    [InlineData("create|service|nodeport|np|--tcp=80:8080|--node-port=30080", "service/np", true)]
    [InlineData("create|serviceaccount|robot", "serviceaccount/robot", true)]
    [InlineData("create|role|reader|--verb=get,list,watch|--resource=pods,configmaps,jobs.batch|--resource-name=a", "role/reader", true)]
    [InlineData("create|rolebinding|rb|--clusterrole=view|--user=bob|--group=ops", "rolebinding/rb", true)]
    [InlineData("create|pdb|p|--selector=app=web,tier notin (db)|--min-available=50%", "pdb/p", true)]
    [InlineData("create|quota|q|--hard=cpu=2,memory=1Gi,pods=10|--scopes=BestEffort", "quota/q", true)]
    [InlineData("create|configmap|cm|--from-literal=a=b", "configmap/cm", true)]
    [InlineData("create|secret|generic|sec|--from-literal=token=s3cr3t|--type=example.com/token", "secret/sec", true)]
    [InlineData("create|clusterrole|health-{ns}|--verb=get|--non-resource-url=/healthz,/livez", "clusterrole/health-{ns}", false)]
    [InlineData("create|clusterrolebinding|health-{ns}|--clusterrole=health-{ns}|--serviceaccount=kube-system:robot", "clusterrolebinding/health-{ns}", false)]
    [InlineData("create|priorityclass|high-{ns}|--value=1000000|--description=for serving", "priorityclass/high-{ns}", false)]
    public async Task Does_store_what_kubectl_encodes_as_json_for_each_create_command(string command, string resource, bool namespaced)
    {
        var ns = await _cluster.NamespaceAsync("same");
        var args = command.Replace("{ns}", ns, StringComparison.Ordinal).Split('|').ToList();
        resource = resource.Replace("{ns}", ns, StringComparison.Ordinal);
        var scope = namespaced ? new[] { "-n", ns } : [];
        var separator = args.IndexOf("--") is var i and >= 0 ? i : args.Count;
        string[] With(params string[] extra) => [.. args[..separator], .. extra, .. scope, .. args[separator..]];

        var intended = JsonNode.Parse(await _cluster.Kubectl(With("--dry-run=client", "-o", "json")))!.AsObject();
        await _cluster.Kubectl(With());
        var stored = JsonNode.Parse(await _cluster.Kubectl(["get", resource, "-o", "json", .. scope]))!;

        intended.Remove("status");
        var missing = new List<string>();
        Compare(Normalize(intended), stored, "", missing);
        Assert.True(missing.Count == 0, $"stored {resource} differs from kubectl's JSON:\n{string.Join('\n', missing)}\nstored: {stored.ToJsonString()}");
    }

    /// <summary>Drops nulls and empty objects (Go's JSON writes <c>creationTimestamp: null</c>, <c>resources: {}</c>).</summary>
    private static JsonNode? Normalize(JsonNode? node)
    {
        switch (node)
        {
            case JsonObject obj:
                var result = new JsonObject();
                foreach (var (key, value) in obj)
                {
                    if (Normalize(value) is { } kept && !(kept is JsonObject { Count: 0 }))
                    {
                        result[key] = kept;
                    }
                }
                return result;
            case JsonArray array:
                return new JsonArray([.. array.Select(Normalize)]);
            default:
                return node?.DeepClone();
        }
    }

    private static void Compare(JsonNode? intended, JsonNode? stored, string path, List<string> differences)
    {
        switch (intended)
        {
            case JsonObject obj:
                foreach (var (key, value) in obj)
                {
                    Compare(value, (stored as JsonObject)?[key], $"{path}.{key}", differences);
                }
                break;
            case JsonArray array when stored is JsonArray list && list.Count == array.Count:
                for (var i = 0; i < array.Count; i++)
                {
                    Compare(array[i], list[i], $"{path}[{i}]", differences);
                }
                break;
            default:
                if (intended?.ToJsonString() != stored?.ToJsonString())
                {
                    differences.Add($"{path}: kubectl {intended?.ToJsonString()}, stored {stored?.ToJsonString() ?? "(missing)"}");
                }
                break;
        }
    }

    /// <summary>The container as sent, without the fields the server defaults (terminationMessagePath and the like).</summary>
    private static JsonNode? RemoveDefaults(JsonNode? containers)
    {
        var copy = containers?.DeepClone();
        foreach (var container in copy?.AsArray().OfType<JsonObject>() ?? [])
        {
            foreach (var key in new[] { "terminationMessagePath", "terminationMessagePolicy", "imagePullPolicy", "resources" })
            {
                container.Remove(key);
            }
        }
        return copy;
    }
}
