using System.CommandLine;
using System.Runtime.InteropServices;
using Lowbit.Cli.Local;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;
using Spectre.Console;

namespace Lowbit.Cli.Commands;

/// <summary><c>lowbit local up</c>: the embedded Kubernetes-compatible API server on 127.0.0.1.</summary>
public static class LocalCommand
{
    public static Command Create()
    {
        var command = new Command("local", "Run the embedded local cluster (a Kubernetes-compatible API server on 127.0.0.1).");
        command.Subcommands.Add(CreateUp());
        return command;
    }

    private static Command CreateUp()
    {
        var kubeconfig = new Option<string?>("--kubeconfig") { Description = "Where to write the kubeconfig (default: <state-dir>/kubeconfig)." };
        var port = new Option<int>("--port") { Description = "Port on 127.0.0.1 (0 = any free port).", DefaultValueFactory = _ => 0 };
        var nodes = new Option<FileInfo?>("--nodes") { Description = "Node description file (YAML or JSON) for the simulated nodes; default: one node per node type of the planner's catalog; CPU nodes execute pods as local processes, GPU nodes are simulated." };
        var stateDir = new Option<string>("--state-dir") { Description = "Directory for the state snapshot and CA.", DefaultValueFactory = _ => ".lowbit" };
        var demo = new Option<bool>("--demo") { Description = "Also install the CRDs, run the operator in this process, apply examples/local and show them going Ready (make run)." };
        var up = new Command("up", "Start the embedded API server; prints 'ready: kubeconfig=<path>' when serving; Ctrl+C saves state and stops.");
        up.Options.Add(kubeconfig);
        up.Options.Add(port);
        up.Options.Add(nodes);
        up.Options.Add(stateDir);
        up.Options.Add(demo);
        up.SetAction(parse => Run(parse.GetValue(kubeconfig), parse.GetValue(port), parse.GetValue(nodes), parse.GetValue(stateDir)!, parse.GetValue(demo)));
        return up;
    }

    private static int Run(string? kubeconfig, int port, FileInfo? nodes, string stateDir, bool demo)
    {
        if (port is < 0 or > 65535)
        {
            Console.Error.WriteLine($"--port: {port} is not a valid port (accepted: 0..65535, 0 = any free port)");
            return ExitCodes.BadInput;
        }
        if (nodes is not null && !nodes.Exists)
        {
            Console.Error.WriteLine($"--nodes: file not found: {nodes.FullName}");
            return ExitCodes.BadInput;
        }
        NodesConfig nodesConfig;
        try
        {
            nodesConfig = nodes is null ? CatalogNodes.FromCatalog(Planner.GpuCatalog.Default) : NodesConfig.LoadFile(nodes.FullName);
        }
        catch (FormatException ex)
        {
            Console.Error.WriteLine($"--nodes: {nodes?.FullName}: {ex.Message}");
            return ExitCodes.BadInput;
        }
        Directory.CreateDirectory(stateDir);
        if (nodes is not null)
        {
            File.Copy(nodes.FullName, Path.Combine(stateDir, "nodes" + nodes.Extension), overwrite: true);
        }
        var repoRoot = demo ? FindRepoRoot() : null;
        if (demo && repoRoot is null)
        {
            Console.Error.WriteLine("--demo: run it from the Lowbit repository (it needs crds/, examples/local/ and tests/fixtures/tiny-llama)");
            return ExitCodes.BadInput;
        }
        using var stop = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        return RunAsync(kubeconfig, port, stateDir, nodesConfig, repoRoot, stop.Token).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(string? kubeconfig, int port, string stateDir, NodesConfig nodesConfig, string? demoRepoRoot, CancellationToken stop)
    {
        LocalClusterServer server;
        try
        {
            server = await LocalClusterServer.StartAsync(new LocalClusterOptions
            {
                Port = port,
                StateDirectory = Path.GetFullPath(stateDir),
                KubeconfigPath = kubeconfig is null ? null : Path.GetFullPath(kubeconfig),
                // Deleted pods stop their local processes (SIGTERM, grace period) before they disappear.
                Store = new ClusterApiOptions { GracefulPodDeletion = true },
            }, stop).ConfigureAwait(false);
        }
        catch (IOException ex)
        {
            Console.Error.WriteLine($"lowbit local up: cannot listen on 127.0.0.1:{port}: {ex.Message}");
            return ExitCodes.Failure;
        }
        using var loggers = LoggerFactory.Create(b => b.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Warning));
        await using (server.ConfigureAwait(false))
        {
            var simulation = await SimulatedCluster.AttachAsync(server, new ClusterSimulationOptions
            {
                Nodes = nodesConfig,
                StateDirectory = Path.Combine(Path.GetFullPath(stateDir), "executor"),
            }, TimeProvider.System, loggers, stop).ConfigureAwait(false);
            await using var _ = simulation.ConfigureAwait(false);
            Console.Error.WriteLine($"lowbit local up: {nodesConfig.Nodes.Count} nodes ({string.Join(", ", nodesConfig.Nodes.Select(n => $"{n.Name}:{n.Mode.ToString().ToLowerInvariant()}"))})");
            Console.WriteLine($"ready: kubeconfig={server.KubeconfigPath}");
            try
            {
                if (demoRepoRoot is not null)
                {
                    SeedLocalModels(demoRepoRoot, Path.Combine(Path.GetFullPath(stateDir), "executor"));
                    var code = await OperatorDemo.RunAsync(server.KubeconfigPath, demoRepoRoot, AnsiConsole.Console, TimeSpan.FromMinutes(15), stop)
                        .ConfigureAwait(false);
                    Console.WriteLine(code == 0
                        ? "demo: every example is Ready; the cluster keeps serving (kubectl --kubeconfig " + server.KubeconfigPath + " get lowbit). Ctrl+C stops."
                        : "demo: not every example became Ready (see the table above); the cluster keeps serving for inspection. Ctrl+C stops.");
                }
                await Task.Delay(Timeout.Infinite, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("lowbit local up: stopping; state saved in " + Path.GetFullPath(stateDir));
            }
        }
        return ExitCodes.Ok;
    }

    /// <summary>
    /// The local examples read the tiny test model from the claim <c>lowbit-models</c>; the executor maps claims to
    /// <c>&lt;executor state&gt;/pvc/&lt;namespace&gt;/&lt;claim&gt;</c>, so the fixture is copied there once.
    /// </summary>
    private static void SeedLocalModels(string repoRoot, string executorState)
    {
        var source = Path.Combine(repoRoot, "tests", "fixtures", "tiny-llama");
        var target = Path.Combine(executorState, "pvc", "default", "lowbit-models", "tiny-llama");
        if (!Directory.Exists(source) || File.Exists(Path.Combine(target, "model.safetensors")))
        {
            return;
        }
        Directory.CreateDirectory(target);
        foreach (var file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
        }
    }

    private static string? FindRepoRoot()
    {
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                if (File.Exists(Path.Combine(dir.FullName, "Operator.sln")) && Directory.Exists(Path.Combine(dir.FullName, "examples", "local")))
                {
                    return dir.FullName;
                }
            }
        }
        return null;
    }
}
