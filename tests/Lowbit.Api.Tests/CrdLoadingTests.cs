using k8s.Models;
using Lowbit.Api.Generation;
using Lowbit.Schema;
using Lowbit.Api.V1Alpha1;

namespace Lowbit.Api.Tests;

public class CrdLoadingTests
{
    [Fact]
    public void Does_round_trip_kubernetes_extensions_when_loading_the_committed_yaml()
    {
        var crds = CustomResourceDefinitions.LoadDirectory(RepoPaths.Crds);
        Assert.Equal(["finetunejobs.lowbit.dev", "inferenceendpoints.lowbit.dev", "quantizedmodels.lowbit.dev"], crds.Select(c => c.Metadata.Name));

        var endpoint = CustomResourceDefinitions.Find(crds, ApiGroup.ApiVersion, InferenceEndpoint.KindName)!;
        var schema = CustomResourceDefinitions.SchemaOf(endpoint, ApiGroup.Version);
        var conditions = schema.Properties["status"].Properties["conditions"];
        Assert.Equal("map", conditions.XKubernetesListType);
        Assert.Equal(["type"], conditions.XKubernetesListMapKeys);
        Assert.True(schema.Properties["spec"].Properties["resources"].Properties["cpu"].XKubernetesIntOrString);
        Assert.Contains(schema.Properties["spec"].Properties["autoscaling"].XKubernetesValidations, r => r.Rule == CelRules.MinNotAboveMax);
        Assert.Equal(".spec.replicas", endpoint.Spec.Versions[0].Subresources.Scale.SpecReplicasPath);
        Assert.Equal(["ie"], endpoint.Spec.Names.ShortNames);
        Assert.Equal(["lowbit"], endpoint.Spec.Names.Categories);
    }

    [Fact]
    public void Does_find_nothing_for_an_unknown_kind()
    {
        var crds = CrdGenerator.ResourceTypes.Select(CrdGenerator.Generate).ToList();
        Assert.Null(CustomResourceDefinitions.Find(crds, ApiGroup.ApiVersion, "Nope"));
        Assert.Null(CustomResourceDefinitions.Find(crds, "lowbit.dev/v1", QuantizedModel.KindName));
        Assert.NotNull(CustomResourceDefinitions.Find(crds, ApiGroup.ApiVersion, QuantizedModel.KindName));
    }

    [Fact]
    public void Does_validate_the_same_with_generated_and_loaded_schemas()
    {
        var generated = CustomResourceDefinitions.SchemaOf(CrdGenerator.Generate(typeof(QuantizedModel)));
        var loaded = CustomResourceDefinitions.SchemaOf(CustomResourceDefinitions.LoadFile(Path.Combine(RepoPaths.Crds, "lowbit.dev_quantizedmodels.yaml")));
        const string manifest = """
            apiVersion: lowbit.dev/v1alpha1
            kind: QuantizedModel
            metadata: {name: m}
            spec:
              source: {huggingFace: {repo: "meta-llama/Llama-2-7b-hf", tokenSecretRef: {name: hf}}}
              method: hqq
              bits: 4
              groupSize: 48
              output: {pvc: {claimName: models}}
            """;
        var a = Yaml.ParseObject(manifest);
        var b = Yaml.ParseObject(manifest);
        var errorsA = StructuralSchema.Apply(a, generated);
        var errorsB = StructuralSchema.Apply(b, loaded);
        Assert.Equal(errorsA, errorsB);
        Assert.Equal("spec.groupSize", Assert.Single(errorsA).Field);
        Assert.Equal(a.ToJsonString(), b.ToJsonString());
        Assert.Equal("token", (string?)a["spec"]!["source"]!["huggingFace"]!["tokenSecretRef"]!["key"]);
        Assert.Equal("10m", (string?)a["spec"]!["scheduling"]!["timeout"]);
        Assert.Equal("lowbit", (string?)a["spec"]!["formats"]![0]);
    }
}
