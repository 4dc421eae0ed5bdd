using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Store;
using static Lowbit.LocalCluster.Tests.Cluster.ClusterHarness;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class DeploymentControllerTests
{
    private static V1Deployment Deployment(string name, int replicas, string image = "registry.example/server:1", Dictionary<string, string>? annotations = null) => new()
    {
        ApiVersion = "apps/v1",
        Kind = "Deployment",
        Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = "default" },
        Spec = new V1DeploymentSpec
        {
            Replicas = replicas,
            Selector = new V1LabelSelector { MatchLabels = new Dictionary<string, string> { ["app"] = name } },
            Template = new V1PodTemplateSpec
            {
                Metadata = new V1ObjectMeta { Labels = new Dictionary<string, string> { ["app"] = name }, Annotations = annotations },
                Spec = new V1PodSpec
                {
                    Containers = [new V1Container { Name = "server", Image = image, Ports = [new V1ContainerPort { Name = "http", ContainerPort = 8000 }] }],
                },
            },
        },
    };

    private static bool RolledOut(V1Deployment d) =>
        d.Status?.ObservedGeneration >= d.Metadata.Generation && d.Status.UpdatedReplicas == d.Spec.Replicas && d.Status.Replicas == d.Spec.Replicas
        && (d.Status.AvailableReplicas ?? 0) == d.Spec.Replicas;

    private static List<V1Pod> LivePods(ClusterHarness cluster, string app) =>
        cluster.Api.List(BuiltinResources.Pods, "default", new ListOptions { LabelSelector = $"app={app}" }).Items
            .Select(p => p.As<V1Pod>()).Where(p => p.Metadata.DeletionTimestamp is null).ToList();

    [Fact]
    public async Task Does_create_available_pods_owned_through_a_replica_set_and_scale_up_and_down()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Deployments, Deployment("web", 3));

        var deployment = await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "web", RolledOut, "rolled out");

        var available = deployment.Status.Conditions.Single(c => c.Type == "Available");
        Assert.Equal(("True", "MinimumReplicasAvailable"), (available.Status, available.Reason));
        Assert.Equal("NewReplicaSetAvailable", deployment.Status.Conditions.Single(c => c.Type == "Progressing").Reason);
        var rs = Assert.Single(cluster.Api.List(BuiltinResources.ReplicaSets, "default").Items).As<V1ReplicaSet>();
        Assert.Equal(deployment.Metadata.Uid, Typed.ControllerOf(rs.Metadata)!.Uid);
        var hash = rs.Metadata.Labels[DeploymentController.TemplateHashLabel];
        Assert.Equal($"web-{hash}", rs.Metadata.Name);
        Assert.Equal("1", rs.Metadata.Annotations[DeploymentController.RevisionAnnotation]);
        var pods = LivePods(cluster, "web");
        Assert.Equal(3, pods.Count);
        Assert.All(pods, p =>
        {
            Assert.Equal(rs.Metadata.Uid, Typed.ControllerOf(p.Metadata)!.Uid);
            Assert.Equal(hash, p.Metadata.Labels[DeploymentController.TemplateHashLabel]);
            Assert.Equal("Running", p.Status.Phase);
        });

        cluster.Api.Patch(BuiltinResources.Deployments, "default", "web", PatchKind.Merge, """{"spec":{"replicas":5}}""");
        await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "web", d => RolledOut(d) && d.Status.ReadyReplicas == 5, "5 ready");
        Assert.Equal(5, LivePods(cluster, "web").Count);

        cluster.Api.Patch(BuiltinResources.Deployments, "default", "web", PatchKind.Merge, """{"spec":{"replicas":1}}""");
        await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "web", d => RolledOut(d) && d.Status.Replicas == 1, "1 replica");
        await cluster.WaitListAsync<V1Pod>(BuiltinResources.Pods, "default", "app=web", l => l.Count == 1, "old pods removed");
    }

    [Fact]
    public async Task Does_roll_out_a_template_change_to_a_new_replica_set_and_scale_the_old_one_to_zero()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Deployments, Deployment("api", 4));
        await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "api", RolledOut, "first rollout");

        cluster.Api.Patch(BuiltinResources.Deployments, "default", "api", PatchKind.StrategicMerge,
            """{"spec":{"template":{"spec":{"containers":[{"name":"server","image":"registry.example/server:2"}]}}}}""");
        var deployment = await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "api",
            d => d.Metadata.Generation == 2 && RolledOut(d), "second rollout");

        Assert.Equal(2, deployment.Status.ObservedGeneration);
        var sets = cluster.Api.List(BuiltinResources.ReplicaSets, "default").Items.Select(r => r.As<V1ReplicaSet>())
            .OrderBy(r => r.Metadata.Annotations[DeploymentController.RevisionAnnotation]).ToList();
        Assert.Equal(2, sets.Count);
        Assert.Equal((0, "1"), (sets[0].Spec.Replicas ?? 0, sets[0].Metadata.Annotations[DeploymentController.RevisionAnnotation]));
        Assert.Equal((4, "2"), (sets[1].Spec.Replicas ?? 0, sets[1].Metadata.Annotations[DeploymentController.RevisionAnnotation]));
        var pods = await cluster.WaitListAsync<V1Pod>(BuiltinResources.Pods, "default", "app=api", l => l.Count == 4, "only new pods");
        Assert.All(pods, p => Assert.Equal("registry.example/server:2", p.Spec.Containers[0].Image));
    }

    [Fact]
    public async Task Does_report_ProgressDeadlineExceeded_when_new_pods_never_become_ready()
    {
        await using var cluster = await StartAsync();
        var stuck = Deployment("stuck", 2, annotations: new() { [SimulationAnnotations.Ready] = "false" });
        stuck.Spec.ProgressDeadlineSeconds = 1;
        cluster.Create(BuiltinResources.Deployments, stuck);

        var deployment = await cluster.WaitAsync<V1Deployment>(BuiltinResources.Deployments, "default", "stuck",
            d => d.Status?.Conditions?.Any(c => c.Type == "Progressing" && c.Status == "False") == true, "ProgressDeadlineExceeded");

        var progressing = deployment.Status.Conditions.Single(c => c.Type == "Progressing");
        Assert.Equal("ProgressDeadlineExceeded", progressing.Reason);
        Assert.Matches("^ReplicaSet \"stuck-\\w+\" has timed out progressing.$", progressing.Message);
        Assert.Equal("False", deployment.Status.Conditions.Single(c => c.Type == "Available").Status);
        Assert.Equal(2, deployment.Status.Replicas);
        Assert.Null(deployment.Status.AvailableReplicas);
    }

    [Fact]
    public async Task Does_publish_ready_pods_as_endpoints_and_remove_children_when_the_deployment_is_deleted()
    {
        await using var cluster = await StartAsync();
        cluster.Create(BuiltinResources.Deployments, Deployment("svc-app", 2));
        cluster.Api.Create(BuiltinResources.Services, "default", Json(new V1Service
        {
            Metadata = new V1ObjectMeta { Name = "svc-app" },
            Spec = new V1ServiceSpec
            {
                Selector = new Dictionary<string, string> { ["app"] = "svc-app" },
                Ports = [new V1ServicePort { Name = "http", Port = 80, TargetPort = "http" }],
            },
        }));

        var endpoints = await cluster.WaitAsync<V1Endpoints>(BuiltinResources.Endpoints, "default", "svc-app",
            e => e.Subsets?.SingleOrDefault()?.Addresses?.Count == 2, "2 ready addresses");
        Assert.Equal(8000, endpoints.Subsets[0].Ports.Single().Port);
        var slice = await cluster.WaitAsync<V1EndpointSlice>(BuiltinResources.EndpointSlices, "default", "svc-app-lowbit",
            s => s.Endpoints?.Count(e => e.Conditions.Ready == true) == 2, "2 ready endpoints");
        Assert.Equal("svc-app", slice.Metadata.Labels["kubernetes.io/service-name"]);

        cluster.Api.Delete(BuiltinResources.Deployments, "default", "svc-app");

        await cluster.WaitListAsync<V1ReplicaSet>(BuiltinResources.ReplicaSets, "default", "app=svc-app", l => l.Count == 0, "replica sets collected");
        await cluster.WaitListAsync<V1Pod>(BuiltinResources.Pods, "default", "app=svc-app", l => l.Count == 0, "pods collected");
        await cluster.WaitAsync<V1Endpoints>(BuiltinResources.Endpoints, "default", "svc-app", e => e.Subsets is null, "no addresses");
    }
}
