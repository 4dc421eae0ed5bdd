using System.CommandLine;
using System.Runtime.InteropServices;
using Lowbit.LocalCluster;
using Lowbit.LocalCluster.Nodes;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

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
        var nodes = new Option<FileInfo?>("--nodes") { Description = "Node description file (YAML or JSON) for the simulated nodes; default: one CPU node that executes pods plus simulated T4, L4, A100 and H100 nodes." };
        var stateDir = new Option<string>("--state-dir") { Description = "Directory for the state snapshot and CA.", DefaultValueFactory = _ => ".lowbit" };
        var demo = new Option<bool>("--demo") { Description = "Also run the operator and the examples (not wired yet)." };
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
            nodesConfig = nodes is null ? NodesConfig.Default : NodesConfig.LoadFile(nodes.FullName);
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
        if (demo)
        {
            Console.Error.WriteLine("lowbit local up: --demo: the operator and demo are not wired into the local cluster yet; serving the API server only");
        }
        using var stop = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        return RunAsync(kubeconfig, port, stateDir, nodesConfig, stop.Token).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(string? kubeconfig, int port, string stateDir, NodesConfig nodesConfig, CancellationToken stop)
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
                await Task.Delay(Timeout.Infinite, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("lowbit local up: stopping; state saved in " + Path.GetFullPath(stateDir));
            }
        }
        return ExitCodes.Ok;
    }
}
