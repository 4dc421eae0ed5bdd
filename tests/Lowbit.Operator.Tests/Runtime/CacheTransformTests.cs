using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Runtime.Tests.Support;
using Lowbit.Operator.Status;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Runtime;

/// <summary>What the informer caches keep of an object: everything a reconciler reads, and nothing it does not.</summary>
public sealed class CacheTransformTests
{
    [Fact]
    public void Does_strip_managed_fields_and_the_last_applied_annotation_and_keep_the_rest()
    {
        var endpoint = Fixtures.Endpoint();
        endpoint.Metadata.ResourceVersion = "42";
        endpoint.Metadata.Labels = new Dictionary<string, string> { ["team"] = "ml" };
        endpoint.Metadata.Annotations = new Dictionary<string, string>
        {
            [CacheTransforms.LastAppliedAnnotation] = KubernetesJson.Serialize(endpoint),
            ["sim.lowbit.dev/exit-code"] = "0",
        };
        endpoint.Metadata.ManagedFields = [ManagedFields("kubectl"), ManagedFields(Labels.FieldManager)];
        endpoint.Status = new InferenceEndpointStatus { ObservedGeneration = 3, Url = "http://llama-chat-inference.ml.svc.cluster.local/v1" };
        var spec = KubernetesJson.Serialize(endpoint.Spec);
        var status = KubernetesJson.Serialize(endpoint.Status);

        var cached = CacheTransforms.StripManagedFields(endpoint);

        Assert.Null(cached.Metadata.ManagedFields);
        Assert.False(cached.Metadata.Annotations.ContainsKey(CacheTransforms.LastAppliedAnnotation));
        Assert.Equal("0", cached.Metadata.Annotations["sim.lowbit.dev/exit-code"]);
        Assert.Equal("ml", cached.Metadata.Labels["team"]);
        Assert.Equal(("llama-chat", "ml", "uid-llama-chat", "42", 3L), (cached.Metadata.Name, cached.Metadata.NamespaceProperty, cached.Metadata.Uid, cached.Metadata.ResourceVersion, cached.Metadata.Generation!.Value));
        Assert.Equal(spec, KubernetesJson.Serialize(cached.Spec));
        Assert.Equal(status, KubernetesJson.Serialize(cached.Status));
    }

    [Fact]
    public void Does_keep_what_the_endpoint_reconciler_reads_of_a_deployment_and_drop_its_pod_template()
    {
        var endpoint = Fixtures.Endpoint();
        var deployment = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, Fixtures.GpuPlacement(endpoint), Fixtures.Options);
        deployment.Metadata.ManagedFields = [ManagedFields(Labels.FieldManager)];
        deployment.Status = new V1DeploymentStatus
        {
            Replicas = 2,
            ReadyReplicas = 1,
            UpdatedReplicas = 2,
            Conditions = [new V1DeploymentCondition { Type = "Progressing", Status = "True", Reason = "NewReplicaSetAvailable" }],
        };
        var original = KubernetesJson.Deserialize<V1Deployment>(KubernetesJson.Serialize(deployment));

        var cached = CacheTransforms.TrimDeployment(CacheTransforms.StripManagedFields(deployment));

        Assert.Null(cached.Spec.Template);
        Assert.Null(cached.Metadata.ManagedFields);
        Assert.Equal(original.Spec.Replicas, cached.Spec.Replicas);
        Assert.Equal(original.Spec.Selector.MatchLabels, cached.Spec.Selector.MatchLabels);
        Assert.Equal(KubernetesJson.Serialize(original.Status), KubernetesJson.Serialize(cached.Status));
        Assert.Equal(ChildMeta.SpecHash(original), ChildMeta.SpecHash(cached));
        Assert.Equal(ChildMeta.PlacementIndex(original, endpoint.Metadata.Generation), ChildMeta.PlacementIndex(cached, endpoint.Metadata.Generation));
        Assert.True(ChildMeta.IsControlledBy(cached, endpoint));
        Assert.Equal(RequestMappers.ControllerOwnerOf(original, ResourceType.For<InferenceEndpoint>()), RequestMappers.ControllerOwnerOf(cached, ResourceType.For<InferenceEndpoint>()));
    }

    [Fact]
    public void Does_keep_a_services_spec_hash_and_owner_and_drop_its_spec()
    {
        var endpoint = Fixtures.Endpoint();
        var service = InferenceServiceBuilder.Build(endpoint);

        var cached = CacheTransforms.TrimService(CacheTransforms.StripManagedFields(InferenceServiceBuilder.Build(endpoint)));

        Assert.Null(cached.Spec);
        Assert.NotNull(ChildMeta.SpecHash(service));
        Assert.Equal(ChildMeta.SpecHash(service), ChildMeta.SpecHash(cached));
        Assert.True(ChildMeta.IsControlledBy(cached, endpoint));
    }

    [Fact]
    public void Does_keep_a_pods_status_labels_and_container_ports_so_diagnosis_and_results_are_unchanged()
    {
        var endpoint = Fixtures.Endpoint();
        var template = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, Fixtures.GpuPlacement(endpoint), Fixtures.Options).Spec.Template;
        V1Pod Pod() => new()
        {
            Metadata = new V1ObjectMeta
            {
                Name = "llama-chat-inference-7d9f-abcde",
                NamespaceProperty = "ml",
                Labels = new Dictionary<string, string>(template.Metadata.Labels),
                Annotations = new Dictionary<string, string>(template.Metadata.Annotations),
                CreationTimestamp = new DateTime(2026, 11, 22, 10, 0, 0, DateTimeKind.Utc),
                OwnerReferences = [new V1OwnerReference { ApiVersion = "apps/v1", Kind = "ReplicaSet", Name = "llama-chat-inference-7d9f", Uid = "rs-uid", Controller = true }],
            },
            Spec = KubernetesJson.Deserialize<V1PodSpec>(KubernetesJson.Serialize(template.Spec)),
            Status = new V1PodStatus
            {
                Phase = "Running",
                PodIP = "10.0.0.7",
                Conditions = [new V1PodCondition { Type = "Ready", Status = "False" }],
                ContainerStatuses =
                [
                    new V1ContainerStatus
                    {
                        Name = PodTemplates.ContainerName,
                        Image = template.Spec.Containers[0].Image,
                        Ready = false,
                        RestartCount = 1,
                        State = new V1ContainerState { Waiting = new V1ContainerStateWaiting { Reason = "CrashLoopBackOff" } },
                        LastState = new V1ContainerState { Terminated = new V1ContainerStateTerminated { ExitCode = 137, Reason = "OOMKilled" } },
                    },
                ],
            },
        };
        var original = Pod();
        Assert.NotEmpty(original.Spec.Containers[0].Env ?? []);

        var cached = CacheTransforms.TrimPod(CacheTransforms.StripManagedFields(Pod()));

        Assert.Null(cached.Spec.Containers[0].Env);
        Assert.Null(cached.Spec.Containers[0].Resources);
        Assert.Null(cached.Spec.Volumes);
        Assert.Equal(original.Spec.Containers[0].Args, cached.Spec.Containers[0].Args);
        Assert.Equal("http", Assert.Single(cached.Spec.Containers[0].Ports).Name);
        Assert.Equal(PodDiagnosis.OfPod(original), PodDiagnosis.OfPod(cached));
        Assert.IsType<PodDiagnosis.OutOfMemory>(PodDiagnosis.OfPod(cached));
        Assert.Equal(KubernetesJson.Serialize(original.Status), KubernetesJson.Serialize(cached.Status));
        Assert.True(ChildMeta.IsComponentOf(cached, endpoint, InferenceDeploymentBuilder.Role));
        Assert.Equal(ChildMeta.Annotation(original, Labels.PlacementAnnotation), ChildMeta.Annotation(cached, Labels.PlacementAnnotation));
    }

    [Fact]
    public void Does_keep_the_container_args_a_finetune_job_resumes_from()
    {
        var job = Fixtures.FineTune();
        var placement = Fixtures.Placement(Planning.FineTune(job, ModelPresets.Llama2_7B, GpuCatalog.Default));
        var child = FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options);

        var cached = CacheTransforms.TrimJob(CacheTransforms.StripManagedFields(FineTuneJobBuilder.Build(job, Fixtures.Model(), placement, Fixtures.Options)));

        Assert.Equal(child.Spec.Template.Spec.Containers[0].Args, cached.Spec.Template.Spec.Containers[0].Args);
        Assert.Equal(FineTuneRequest.ResumeLatest, FineTuneRequest.Parse(cached.Spec.Template.Spec.Containers[0].Args.ToList()).ResumeFrom);
        Assert.Equal(ChildMeta.SpecHash(child), ChildMeta.SpecHash(cached));
        Assert.Null(cached.Spec.Template.Spec.Containers[0].Env);
        Assert.Null(cached.Spec.Template.Spec.Volumes);
    }

    [Fact]
    public void Does_cache_a_foreign_object_as_metadata_only_and_ours_trimmed()
    {
        var endpoint = Fixtures.Endpoint();
        var ours = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = Fixtures.Model() }, Fixtures.GpuPlacement(endpoint), Fixtures.Options);
        var foreign = new V1Deployment
        {
            ApiVersion = "apps/v1",
            Kind = "Deployment",
            Metadata = new V1ObjectMeta
            {
                Name = ours.Metadata.Name,
                NamespaceProperty = "ml",
                Uid = "foreign-uid",
                ResourceVersion = "7",
                Labels = new Dictionary<string, string> { ["app"] = "someone-else" },
                Annotations = new Dictionary<string, string> { ["note"] = "not ours" },
                OwnerReferences = [new V1OwnerReference { ApiVersion = "argoproj.io/v1alpha1", Kind = "Rollout", Name = "x", Uid = "rollout-uid", Controller = true }],
            },
            Spec = ours.Spec,
            Status = new V1DeploymentStatus { ReadyReplicas = 3 },
        };
        var transform = CacheTransforms.MetadataOnlyUnless<V1Deployment>(d => ChildMeta.Label(d, Labels.ManagedBy) == Labels.ManagedByValue, CacheTransforms.TrimDeployment);

        var cachedForeign = transform(foreign);
        var cachedOurs = transform(ours);

        Assert.Null(cachedForeign.Spec);
        Assert.Null(cachedForeign.Status);
        Assert.Equal("not ours", cachedForeign.Metadata.Annotations["note"]);
        Assert.Equal(("Deployment", "apps/v1", ours.Metadata.Name, "foreign-uid", "7"), (cachedForeign.Kind, cachedForeign.ApiVersion, cachedForeign.Metadata.Name, cachedForeign.Metadata.Uid, cachedForeign.Metadata.ResourceVersion));
        Assert.False(ChildMeta.IsControlledBy(cachedForeign, endpoint)); // the applier still leaves it alone
        Assert.Equal("rollout-uid", Assert.Single(cachedForeign.Metadata.OwnerReferences).Uid);
        Assert.NotNull(cachedOurs.Spec);
        Assert.True(ChildMeta.IsControlledBy(cachedOurs, endpoint));
        Assert.Equal(ChildMeta.SpecHash(ours), ChildMeta.SpecHash(cachedOurs));
    }

    [Fact]
    public void Does_share_repeated_metadata_strings_between_cached_objects_without_changing_them()
    {
        var endpoint = Fixtures.Endpoint();
        var first = KubernetesJson.Deserialize<V1Service>(KubernetesJson.Serialize(InferenceServiceBuilder.Build(endpoint)));
        var second = KubernetesJson.Deserialize<V1Service>(KubernetesJson.Serialize(InferenceServiceBuilder.Build(endpoint)));
        var labels = new Dictionary<string, string>(first.Metadata.Labels);
        Assert.False(ReferenceEquals(first.Metadata.Labels.Keys.First(), second.Metadata.Labels.Keys.First()));

        CacheTransforms.InternMetadata(first);
        CacheTransforms.InternMetadata(second);

        Assert.Equal(labels, first.Metadata.Labels);
        foreach (var (key, value) in first.Metadata.Labels)
        {
            var other = second.Metadata.Labels.Single(kv => kv.Key == key);
            Assert.Same(key, other.Key);
            Assert.Same(value, other.Value);
        }

        Assert.Same(first.Metadata.NamespaceProperty, second.Metadata.NamespaceProperty);
        Assert.Same(first.Metadata.OwnerReferences[0].Kind, second.Metadata.OwnerReferences[0].Kind);
    }

    private static V1ManagedFieldsEntry ManagedFields(string manager) => new()
    {
        Manager = manager,
        Operation = "Apply",
        ApiVersion = "lowbit.dev/v1alpha1",
        FieldsType = "FieldsV1",
        FieldsV1 = new Dictionary<string, object> { ["f:spec"] = new Dictionary<string, object> { ["f:replicas"] = new Dictionary<string, object>() } },
    };
}
