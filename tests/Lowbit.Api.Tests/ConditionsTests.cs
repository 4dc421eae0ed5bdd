using k8s.Models;

namespace Lowbit.Api.Tests;

public class ConditionsTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 22, 12, 0, 0, TimeSpan.Zero);

    [Fact]
    public void Does_keep_last_transition_time_when_status_does_not_change()
    {
        var first = Conditions.Set(null, Conditions.Reconciling(Conditions.Reasons.WaitingForGpu, "waiting", 1, T0));
        var second = Conditions.Set(first, Conditions.Reconciling(Conditions.Reasons.Running, "running", 2, T0.AddMinutes(5)));
        var condition = Assert.Single(second);
        Assert.Equal(T0.UtcDateTime, condition.LastTransitionTime);
        Assert.Equal(Conditions.Reasons.Running, condition.Reason);
        Assert.Equal(2, condition.ObservedGeneration);
    }

    [Fact]
    public void Does_move_last_transition_time_when_status_flips()
    {
        var first = Conditions.Set(null, Conditions.NotReady(Conditions.Reasons.Pending, "pending", 1, T0));
        var second = Conditions.Set(first, Conditions.Ready("serving", 1, T0.AddMinutes(3)));
        Assert.Equal(T0.AddMinutes(3).UtcDateTime, Assert.Single(second).LastTransitionTime);
        Assert.True(Conditions.IsTrue(second, Conditions.Types.Ready));
    }

    [Fact]
    public void Does_key_the_list_by_type()
    {
        IReadOnlyList<V1Condition> list = [];
        list = Conditions.Set(list, Conditions.Planned("1x L4", 1, T0));
        list = Conditions.Set(list, Conditions.ReadyUnknown(Conditions.Reasons.Pending, "starting", 1, T0));
        list = Conditions.Set(list, Conditions.Planned("1x A10G", 1, T0));
        Assert.Equal([Conditions.Types.Planned, Conditions.Types.Ready], list.Select(c => c.Type));
        Assert.Equal("1x A10G", Conditions.Find(list, Conditions.Types.Planned)!.Message);
        Assert.Null(Conditions.Find(list, Conditions.Types.Stalled));
    }

    [Fact]
    public void Does_report_invalid_spec_as_stalled_and_not_ready()
    {
        var set = Conditions.InvalidSpec("spec.bits: Required value", 3, T0);
        Assert.Contains(set, c => c is { Type: "Ready", Status: "False", Reason: "InvalidSpec" });
        Assert.Contains(set, c => c is { Type: "Stalled", Status: "True", Reason: "InvalidSpec" });
        Assert.Contains(set, c => c is { Type: "Reconciling", Status: "False" });
        Assert.All(set, c => Assert.Equal(3, c.ObservedGeneration));
    }
}

public class LabelsTests
{
    [Fact]
    public void Does_label_children_with_standard_and_owner_keys_only()
    {
        var labels = Labels.ForChild("InferenceEndpoint", "llama", Labels.Components.Inference);
        Assert.Equal("llama", labels["lowbit.dev/inferenceendpoint"]);
        Assert.Equal("llama", labels[Labels.Instance]);
        Assert.Equal("inference", labels[Labels.Component]);
        Assert.Equal("lowbit-operator", labels[Labels.ManagedBy]);
        Assert.DoesNotContain(labels.Keys, k => k.StartsWith("argocd.argoproj.io", StringComparison.Ordinal));
        Assert.Equal("lowbit-operator", Labels.FieldManager);
    }
}

public class WireNamesTests
{
    [Fact]
    public void Does_spell_enum_values_as_in_manifests()
    {
        Assert.Equal("gguf-q8_0", V1Alpha1.WireNames.Of(V1Alpha1.ExportFormat.GgufQ80));
        Assert.Equal("qlora", V1Alpha1.WireNames.Of(Lowbit.Engine.Protocol.FineTuneMethod.Qlora));
        Assert.Equal(Lowbit.Engine.Protocol.ServingRuntime.LlamaCpp, V1Alpha1.WireNames.Parse<Lowbit.Engine.Protocol.ServingRuntime>("llamacpp"));
        Assert.Null(V1Alpha1.WireNames.Parse<Lowbit.Engine.Protocol.ServingRuntime>("Llamacpp"));
        Assert.Equal(["rtn", "hqq", "gptq"], V1Alpha1.WireNames.All<Lowbit.Engine.Protocol.QuantizationMethod>());
        Assert.Equal(Generation.CrdGenerator.EnumValues(typeof(V1Alpha1.ExportFormat)), V1Alpha1.WireNames.All<V1Alpha1.ExportFormat>());
    }

    [Fact]
    public void Does_name_children_owner_dash_component()
    {
        Assert.Equal("llama-inference", Labels.ChildName("llama", Labels.Components.Inference));
    }
}
