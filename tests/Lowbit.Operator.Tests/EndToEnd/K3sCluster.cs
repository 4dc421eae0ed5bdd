using System.Text;
using Lowbit.LocalCluster.Nodes;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Operator.Runtime;
using Lowbit.Operator.Tests.Reconcilers;
using Lowbit.Planner;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Testcontainers.K3s;

namespace Lowbit.Operator.Tests.EndToEnd;

/// <summary>
/// A real K3s cluster in Docker (Testcontainers.K3s) with our CRDs applied server-side, its node labelled as the
/// catalog's CPU node type, and the operator running in process against it. Starts nothing without Docker.
/// </summary>
public sealed class K3sCluster : IAsyncLifetime
{
    public const string Image = "rancher/k3s:v1.33.4-k3s1";
    public const string Namespace = "default";
    private const string FieldManager = "lowbit-e2e";
    public static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    private K3sContainer? _container;
    private WebApplication? _operator;
    private Kubernetes? _client;

    public Kubernetes Client => _client ?? throw new InvalidOperationException("K3s was not started: " + DockerEngine.Unreachable);

    public async Task InitializeAsync()
    {
        if (DockerEngine.Unreachable is not null)
        {
            return;
        }

        _container = new K3sBuilder(Image).Build();
        await _container.StartAsync();
        var kubeconfig = await _container.GetKubeconfigAsync();
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(kubeconfig));
        var config = await KubernetesClientConfiguration.BuildConfigFromConfigFileAsync(stream);
        _client = new Kubernetes(config);

        foreach (var file in Directory.GetFiles(Path.Combine(OperatorHarness.RepoRoot, "crds"), "*.yaml").Order(StringComparer.Ordinal))
        {
            var crd = KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file));
            await _client.ApiextensionsV1.PatchCustomResourceDefinitionAsync(new V1Patch(crd, V1Patch.PatchType.ApplyPatch), crd.Metadata.Name,
                fieldManager: FieldManager, force: true);
            await UntilAsync(async () => (await _client.ApiextensionsV1.ReadCustomResourceDefinitionAsync(crd.Metadata.Name)).Status?.Conditions?
                .Any(c => c.Type == "Established" && c.Status == "True") == true, $"CRD {crd.Metadata.Name} Established");
        }

        await LabelNodeAsCatalogCpuNodeAsync(_client);
        await _client.CoreV1.CreateNamespacedSecretAsync(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "hf-token" },
            StringData = new Dictionary<string, string> { ["token"] = "hf_canary_0123456789" },
        }, Namespace);
        await _client.CoreV1.CreateNamespacedPersistentVolumeClaimAsync(new V1PersistentVolumeClaim
        {
            Metadata = new V1ObjectMeta { Name = "models" },
            Spec = new V1PersistentVolumeClaimSpec
            {
                AccessModes = ["ReadWriteOnce"],
                Resources = new V1VolumeResourceRequirements { Requests = new Dictionary<string, ResourceQuantity> { ["storage"] = new("1Gi") } },
            },
        }, Namespace);

        _operator = OperatorHost.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"], op =>
        {
            op.Services.AddSingleton(GpuCatalog.Default);
            OperatorSetup.Configure(op);
            op.UseKubernetes(config);
            op.Configure(o => o.LeaderElection.Enabled = false);
        });
        await _operator.StartAsync();
    }

    /// <summary>The single K3s node gets the labels of the catalog's CPU node type (its node selector and node-type label).</summary>
    private static async Task LabelNodeAsCatalogCpuNodeAsync(Kubernetes client)
    {
        var cpuType = GpuCatalog.Default.NodeTypes.Single(t => t.Kind == DeviceKind.Cpu);
        var node = Assert.Single((await client.CoreV1.ListNodeAsync()).Items);
        var labels = new Dictionary<string, string>(SimulatedNodes.Create(cpuType, node.Metadata.Name).Labels, StringComparer.Ordinal);
        labels.Remove("kubernetes.io/hostname");
        var patch = new V1Node { Metadata = new V1ObjectMeta { Labels = labels } };
        await client.CoreV1.PatchNodeAsync(new V1Patch(patch, V1Patch.PatchType.StrategicMergePatch), node.Metadata.Name);
    }

    /// <summary>Polls <paramref name="condition"/> until it holds or <see cref="Patience"/> runs out.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        while (DateTime.UtcNow < deadline)
        {
            if (await condition())
            {
                return;
            }

            await Task.Delay(250);
        }

        throw new TimeoutException($"{what}: not reached within {Patience.TotalSeconds} s");
    }

    public async Task DisposeAsync()
    {
        if (_operator is not null)
        {
            await _operator.StopAsync();
            await _operator.DisposeAsync();
        }

        _client?.Dispose();
        if (_container is not null)
        {
            await _container.DisposeAsync();
        }
    }
}
