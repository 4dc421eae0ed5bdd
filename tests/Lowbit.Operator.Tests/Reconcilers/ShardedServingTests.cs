using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The lowbit runtime on several GPUs of one pod: <c>serve --shards</c> = the placement's GPUs.</summary>
public sealed class ShardedServingTests
{
    [Fact]
    public void Does_pass_the_pods_gpus_as_serve_shards_when_one_gpu_is_too_small()
    {
        var endpoint = Fixtures.Endpoint(replicas: 1);
        endpoint.Spec = endpoint.Spec with { Budget = new BudgetSpec { AllowedGpuTypes = ["l4"] } };
        var model = Fixtures.Model();
        var plan = Planning.Inference(endpoint, model, ModelPresets.Llama2_70B, GpuCatalog.Default);
        var placement = Planning.Choose(plan, 0)!;
        Assert.True(placement.GpusPerReplica > 1, placement.Label);
        Assert.Equal((placement.GpusPerReplica, 1), (placement.PipelineStages, placement.TensorParallel));

        var deployment = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = model }, placement, Fixtures.Options);

        var container = Assert.Single(deployment.Spec.Template.Spec.Containers);
        var serve = ServeRequest.Parse([.. container.Args]);
        Assert.Equal("serve", container.Args[0]);
        Assert.Equal(placement.GpusPerReplica, serve.Shards);
        Assert.Equal(placement.GpusPerReplica.ToString(System.Globalization.CultureInfo.InvariantCulture), container.Resources.Limits["nvidia.com/gpu"].ToString());
    }

    [Fact]
    public void Does_not_pass_shards_on_one_gpu()
    {
        var endpoint = Fixtures.Endpoint(replicas: 1);
        var model = Fixtures.Model();
        var placement = Planning.Choose(Planning.Inference(endpoint, model, ModelPresets.Llama2_7B, GpuCatalog.Default), 0)!;

        var deployment = InferenceDeploymentBuilder.Build(endpoint, new ServedModel { QuantizedModel = model }, placement, Fixtures.Options);

        Assert.DoesNotContain(PipelineSplit.ShardsFlag, deployment.Spec.Template.Spec.Containers[0].Args);
    }
}
