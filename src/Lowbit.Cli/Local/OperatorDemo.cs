using System.Globalization;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator;
using Lowbit.Operator.Runtime;
using Spectre.Console;

namespace Lowbit.Cli.Local;

/// <summary>
/// <c>make run</c>'s second half, for <c>lowbit local up</c> to call once its cluster is serving: installs the CRDs
/// from <c>crds/</c>, runs the operator in this process, applies <c>examples/local/*.yaml</c> and shows the objects
/// going Ready in a live table. It says which engine verbs run for real and which are simulated.
/// </summary>
public static class OperatorDemo
{
    /// <summary>Engine verbs that exist and run for real through the executor on the CPU node.</summary>
    public static readonly IReadOnlyList<string> RealVerbs = ["inspect", "quantize", "eval"];

    /// <summary>Verbs that do not exist yet: their pods run in simulate mode with a scripted result.</summary>
    public static readonly IReadOnlyList<string> SimulatedVerbs = ["finetune", "serve"];

    public static async Task<int> RunAsync(string kubeconfig, string repoRoot, IAnsiConsole console, TimeSpan timeout, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(console);
        var config = KubernetesClientConfiguration.BuildConfigFromConfigFile(kubeconfig);
        using var client = new Kubernetes(config);
        foreach (var file in Directory.GetFiles(Path.Combine(repoRoot, "crds"), "*.yaml").Order(StringComparer.Ordinal))
        {
            var crd = KubernetesYaml.Deserialize<V1CustomResourceDefinition>(await File.ReadAllTextAsync(file, cancellationToken).ConfigureAwait(false));
            await client.ApiextensionsV1.PatchCustomResourceDefinitionAsync(new V1Patch(crd, V1Patch.PatchType.ApplyPatch), crd.Metadata.Name,
                fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
        }

        console.MarkupLine($"[bold]Engine verbs run for real on the CPU node:[/] {string.Join(", ", RealVerbs)}");
        console.MarkupLine($"[bold yellow]Simulated (verb not implemented yet, scripted result):[/] {string.Join(", ", SimulatedVerbs)}");

        var app = OperatorHost.Build(["--urls", "http://127.0.0.1:0", "--Logging:LogLevel:Default", "Warning"], op =>
        {
            OperatorSetup.Configure(op);
            op.UseKubernetes(config);
            op.Configure(o => o.LeaderElection.Enabled = false);
        });
        await app.StartAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var applied = await ApplyExamplesAsync(client, Path.Combine(repoRoot, "examples", "local"), cancellationToken).ConfigureAwait(false);
            return await ShowAsync(client, applied, console, timeout, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
    }

    private static async Task<List<(string Kind, string Plural, string Name)>> ApplyExamplesAsync(Kubernetes client, string folder, CancellationToken cancellationToken)
    {
        var applied = new List<(string, string, string)>();
        foreach (var file in Directory.GetFiles(folder, "*.yaml").Order(StringComparer.Ordinal))
        {
            var text = await File.ReadAllTextAsync(file, cancellationToken).ConfigureAwait(false);
            var kind = System.Text.RegularExpressions.Regex.Match(text, @"^kind:\s*(\S+)", System.Text.RegularExpressions.RegexOptions.Multiline).Groups[1].Value;
            switch (kind)
            {
                case "ConfigMap":
                    var cm = KubernetesYaml.Deserialize<V1ConfigMap>(text);
                    await client.CoreV1.PatchNamespacedConfigMapAsync(new V1Patch(cm, V1Patch.PatchType.ApplyPatch), cm.Metadata.Name, "default",
                        fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
                    break;
                case QuantizedModel.KindName:
                    applied.Add(await ApplyAsync<QuantizedModel>(client, text, QuantizedModel.Plural, cancellationToken).ConfigureAwait(false));
                    break;
                case FineTuneJob.KindName:
                    applied.Add(await ApplyAsync<FineTuneJob>(client, text, FineTuneJob.Plural, cancellationToken).ConfigureAwait(false));
                    break;
                case InferenceEndpoint.KindName:
                    applied.Add(await ApplyAsync<InferenceEndpoint>(client, text, InferenceEndpoint.Plural, cancellationToken).ConfigureAwait(false));
                    break;
            }
        }

        return applied;
    }

    private static async Task<(string, string, string)> ApplyAsync<T>(Kubernetes client, string yaml, string plural, CancellationToken cancellationToken)
        where T : IKubernetesObject<V1ObjectMeta>
    {
        // The manifest goes to the server as written (YAML → JSON), like `kubectl apply --server-side`: no round trip
        // through the C# types, so nothing the user wrote is dropped or re-defaulted on the client.
        var obj = Lowbit.Api.Schema.Yaml.ParseObject(yaml);
        ScriptSimulatedVerbs(obj);
        var name = (string?)obj["metadata"]?["name"] ?? throw new InvalidOperationException($"{typeof(T).Name} manifest without metadata.name");
        var kind = (string?)obj["kind"] ?? typeof(T).Name;
        await client.CustomObjects.PatchNamespacedCustomObjectAsync(new V1Patch(obj.ToJsonString(), V1Patch.PatchType.ApplyPatch), ApiGroup.Group,
            ApiGroup.Version, "default", plural, name, fieldManager: "lowbit-cli", force: true, cancellationToken: cancellationToken).ConfigureAwait(false);
        return (kind, plural, name);
    }

    /// <summary>
    /// FineTuneJob and InferenceEndpoint pods would run <c>lowbit-engine finetune|serve</c>, which do not exist yet: the
    /// operator forwards <c>sim.lowbit.dev/*</c> annotations to its pods, so these pods run simulated (even on the
    /// executing CPU node) with a scripted engine result. The operator treats them like any other pod.
    /// </summary>
    private static void ScriptSimulatedVerbs(System.Text.Json.Nodes.JsonObject obj)
    {
        var kind = (string?)obj["kind"];
        if (kind is not (FineTuneJob.KindName or InferenceEndpoint.KindName))
        {
            return;
        }
        var metadata = obj["metadata"] as System.Text.Json.Nodes.JsonObject ?? [];
        obj["metadata"] = metadata;
        var annotations = metadata["annotations"] as System.Text.Json.Nodes.JsonObject ?? [];
        metadata["annotations"] = annotations;
        annotations["sim.lowbit.dev/mode"] = "simulate";
        if (kind == FineTuneJob.KindName)
        {
            var name = (string?)metadata["name"] ?? "adapter";
            annotations["sim.lowbit.dev/duration"] = "5s";
            annotations["sim.lowbit.dev/log"] = new Lowbit.Engine.Protocol.TrainEvent { Step = 20, TotalSteps = 20, Epoch = 1, Loss = 1.9, TokensPerSecond = 850 }.ToJsonLine();
            annotations["sim.lowbit.dev/termination-message"] = new Lowbit.Engine.Protocol.EngineResult
            {
                Ok = true,
                Verb = Lowbit.Engine.Protocol.EngineVerbs.Finetune,
                DurationSeconds = 5,
                Artifact = new Lowbit.Engine.Protocol.ArtifactReport { Uri = $"pvc://lowbit-models/adapters/{name}", Format = "peft-lora", Bytes = 262_144 },
            }.ToJson();
        }
    }

    private static async Task<int> ShowAsync(Kubernetes client, List<(string Kind, string Plural, string Name)> objects, IAnsiConsole console, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var table = new Table().AddColumns("Kind", "Name", "Ready", "Phase", "Reason", "Message");
        var allReady = false;
        var deadline = DateTime.UtcNow + timeout;
        await console.Live(table).StartAsync(async context =>
        {
            while (!allReady && DateTime.UtcNow < deadline && !cancellationToken.IsCancellationRequested)
            {
                table.Rows.Clear();
                allReady = true;
                foreach (var (kind, plural, name) in objects)
                {
                    var obj = await client.CustomObjects.GetNamespacedCustomObjectAsync<GenericStatusObject>(ApiGroup.Group, ApiGroup.Version, "default", plural, name, cancellationToken).ConfigureAwait(false);
                    var ready = Conditions.Find(obj.Status?.Conditions, Conditions.Types.Ready);
                    allReady &= ready?.Status == Conditions.True;
                    table.AddRow(kind, name, ready?.Status ?? "Unknown", obj.Status?.Phase ?? "", ready?.Reason ?? "", Markup.Escape(ready?.Message ?? ""));
                }

                context.Refresh();
                await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            }
        }).ConfigureAwait(false);
        console.MarkupLine(allReady
            ? "[green]All objects are Ready.[/]"
            : string.Create(CultureInfo.InvariantCulture, $"[red]Not all objects were Ready within {timeout.TotalSeconds:0} s.[/]"));
        return allReady ? 0 : 1;
    }

    /// <summary>The status fields every Lowbit kind shares (conditions and phase).</summary>
    private sealed class GenericStatusObject
    {
        public GenericStatus? Status { get; set; }
    }

    private sealed class GenericStatus
    {
        public List<V1Condition>? Conditions { get; set; }

        public string? Phase { get; set; }
    }
}
