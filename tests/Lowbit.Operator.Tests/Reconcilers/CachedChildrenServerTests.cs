using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.DependencyInjection;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The operator's caches as OperatorSetup configures them, against the embedded API server and simulated nodes.</summary>
[Collection("OperatorServer")]
public sealed class CachedChildrenServerTests : IAsyncLifetime
{
    private OperatorHarness _h = null!;

    public async Task InitializeAsync() => _h = await OperatorHarness.StartAsync();

    public async Task DisposeAsync() => await _h.DisposeAsync();

    [Fact]
    public async Task Does_cache_trimmed_children_and_only_our_pods_while_the_endpoint_goes_ready()
    {
        _h.Create(new V1Pod
        {
            Metadata = new V1ObjectMeta { Name = "someone-elses", NamespaceProperty = "default", Labels = new Dictionary<string, string> { ["app"] = "web" } },
            Spec = new V1PodSpec { Containers = [new V1Container { Name = "web", Image = "nginx" }] },
        });
        _h.Create(new InferenceEndpoint
        {
            Metadata = new V1ObjectMeta { Name = "chat", NamespaceProperty = "default" },
            Spec = new InferenceEndpointSpec
            {
                Model = new ModelReference { Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "mistralai/Mistral-7B-v0.1" } } },
                Replicas = 1,
                MaxContextLength = 4096,
                MaxConcurrency = 4,
            },
        });
        await _h.WaitAsync<InferenceEndpoint>("chat", e => Conditions.IsTrue(e.Status?.Conditions, Conditions.Types.Ready), "endpoint Ready (read from the trimmed caches)");
        await _h.WaitIdleAsync("inferenceendpoint");
        var cache = _h.Operator.Services.GetRequiredService<IObjectCache>();

        Assert.True(cache.TryGet<V1Deployment>(new ObjectKey("default", "chat-inference"), out var deployment));
        Assert.Null(deployment.Spec.Template);
        Assert.Null(deployment.Metadata.ManagedFields);
        Assert.Equal(1, deployment.Status.ReadyReplicas);
        Assert.NotEmpty(_h.Api.Get<V1Deployment>("default", "chat-inference").Metadata.ManagedFields);
        Assert.True(cache.TryGet<V1Service>(new ObjectKey("default", "chat-inference"), out var service));
        Assert.Null(service.Spec);
        var pods = cache.List<V1Pod>("default");
        Assert.NotEmpty(pods);
        Assert.All(pods, p => Assert.Equal(Labels.ManagedByValue, p.Metadata.Labels[Labels.ManagedBy]));
        Assert.All(pods, p => Assert.Null(p.Spec.Containers[0].Env));
        Assert.Contains(pods, p => p.Status?.Phase == "Running");
        Assert.DoesNotContain(pods, p => p.Metadata.Name == "someone-elses");
    }
}
