using System.Net;
using Lowbit.Engine.Protocol;
using k8s;
using k8s.Autorest;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Planner;

namespace Lowbit.Operator.Tests.EndToEnd;

/// <summary>
/// The operator against a real K3s apiserver, scheduler and garbage collector (`make test-k3s`). Skipped, with the
/// reason, when no Docker engine answers.
/// </summary>
[Trait("Category", "K3s")]
public sealed class K3sEndToEndTests(K3sCluster k3s) : IClassFixture<K3sCluster>
{
    private Kubernetes Client => k3s.Client;

    private static QuantizedModel Model(string name, Action<QuantizedModel>? change = null)
    {
        var model = Fixtures.Model(name, change);
        model.Metadata = new V1ObjectMeta { Name = name, NamespaceProperty = K3sCluster.Namespace };
        return model;
    }

    /// <summary>A 7B model restricted to T4 GPUs: a valid plan, but the K3s cluster has no GPU node.</summary>
    private static QuantizedModel OnT4Only(string name) =>
        Model(name, m => m.Spec = m.Spec with { Scheduling = new SchedulingSpec { AllowedGpuTypes = ["t4"] } });

    private Task CreateAsync(QuantizedModel model) =>
        Client.CustomObjects.CreateNamespacedCustomObjectAsync(model, ApiGroup.Group, ApiGroup.Version, K3sCluster.Namespace, QuantizedModel.Plural);

    private Task<QuantizedModel> GetAsync(string name) =>
        Client.CustomObjects.GetNamespacedCustomObjectAsync<QuantizedModel>(ApiGroup.Group, ApiGroup.Version, K3sCluster.Namespace, QuantizedModel.Plural, name);

    private async Task<V1Job?> TryGetJobAsync(string name)
    {
        try
        {
            return await Client.BatchV1.ReadNamespacedJobAsync(name, K3sCluster.Namespace);
        }
        catch (HttpOperationException ex) when (ex.Response.StatusCode == HttpStatusCode.NotFound)
        {
            return null;
        }
    }

    [K3sFact]
    public async Task Does_reject_gptq_without_calibration_at_the_apiserver_naming_spec_calibration()
    {
        var invalid = Model("gptq-no-calibration", m => m.Spec = m.Spec with { Method = QuantizationMethod.Gptq, Calibration = null });

        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => CreateAsync(invalid));

        Assert.Equal(HttpStatusCode.UnprocessableEntity, ex.Response.StatusCode);
        Assert.Contains("spec.calibration", ex.Response.Content, StringComparison.Ordinal);
    }

    [K3sFact]
    public async Task Does_reject_quantize_head_with_a_gptq_export_at_the_apiserver_and_accept_it_with_lowbit_and_gguf()
    {
        var gptq = Model("head-gptq", m => m.Spec = m.Spec with { QuantizeHead = true, Formats = [ExportFormat.Lowbit, ExportFormat.Gptq] });
        var lowbit = OnT4Only("head-lowbit");
        lowbit.Spec = lowbit.Spec with { QuantizeHead = true };

        var ex = await Assert.ThrowsAsync<HttpOperationException>(() => CreateAsync(gptq));
        await CreateAsync(lowbit);

        Assert.Equal(HttpStatusCode.UnprocessableEntity, ex.Response.StatusCode);
        Assert.Contains("spec.quantizeHead", ex.Response.Content, StringComparison.Ordinal);
        Assert.True((await GetAsync("head-lowbit")).Spec.QuantizeHead);
    }

    [K3sFact]
    public async Task Does_create_the_job_with_the_gpu_node_selector_and_report_waiting_for_gpu_when_no_gpu_node_exists()
    {
        await CreateAsync(OnT4Only("no-gpu"));

        V1Job? job = null;
        await K3sCluster.UntilAsync(async () => (job = await TryGetJobAsync("no-gpu-quantize")) is not null, "quantize Job created");
        var t4 = GpuCatalog.Default.NodeTypes.Single(t => t.Name == "t4");
        foreach (var (key, value) in t4.NodeSelector)
        {
            Assert.Equal(value, job!.Spec.Template.Spec.NodeSelector[key]);
        }

        V1Condition? ready = null;
        await K3sCluster.UntilAsync(async () =>
        {
            ready = Conditions.Find((await GetAsync("no-gpu")).Status?.Conditions, Conditions.Types.Ready);
            return ready?.Reason is Conditions.Reasons.WaitingForGpu or Conditions.Reasons.Unschedulable;
        }, "QuantizedModel Ready=False waiting for a GPU");
        Assert.Equal("False", ready!.Status);
        Assert.Contains("t4", ready.Message, StringComparison.OrdinalIgnoreCase);
    }

    [K3sFact]
    public async Task Does_remove_the_job_through_owner_reference_gc_when_the_model_is_deleted()
    {
        await CreateAsync(OnT4Only("gc"));
        V1Job? job = null;
        await K3sCluster.UntilAsync(async () => (job = await TryGetJobAsync("gc-quantize")) is not null, "quantize Job created");
        var model = await GetAsync("gc");
        Assert.Equal(model.Metadata.Uid, Assert.Single(job!.Metadata.OwnerReferences).Uid);

        await Client.CustomObjects.DeleteNamespacedCustomObjectAsync(ApiGroup.Group, ApiGroup.Version, K3sCluster.Namespace, QuantizedModel.Plural, "gc");

        await K3sCluster.UntilAsync(async () => await TryGetJobAsync("gc-quantize") is null, "quantize Job garbage-collected");
    }
}
