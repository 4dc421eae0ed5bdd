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
        var demo = new Option<bool>("--demo") { Description = "Also apply examples/local, follow them to Ready, chat with the endpoint, scrape with Prometheus and print a summary (make run)." };
        var noOperator = new Option<bool>("--no-operator") { Description = "Do not run the operator (by default it runs in this process, with the CRDs installed)." };
        var exitAfterDemo = new Option<bool>("--exit-after-demo") { Description = "With --demo: stop the cluster when the demo ends (exit 0 when every step passed); for scripts and tests." };
        var engine = new Option<string?>("--engine") { Description = "The lowbit-engine executable that executed pods run (default: <repo>/out/lowbit-engine, as make build writes it)." };
        var snapshotInterval = new Option<int>("--snapshot-interval")
        {
            Description = "Seconds between state snapshots (state.jsonl): after a crash, writes acknowledged up to this long before it may be lost.",
            DefaultValueFactory = _ => 30,
        };
        var noSweep = new Option<bool>("--no-sweep") { Description = "With --demo: skip the quantization sweep and its perplexity chart." };
        var finetuneSteps = new Option<int?>("--finetune-steps") { Description = "With --demo: train the example FineTuneJob for this many steps instead of its spec.training.maxSteps (quicker runs, tests)." };
        var up = new Command("up", "Start the embedded API server; prints 'ready: kubeconfig=<path>' when serving; Ctrl+C saves state and stops.");
        up.Options.Add(kubeconfig);
        up.Options.Add(port);
        up.Options.Add(nodes);
        up.Options.Add(stateDir);
        up.Options.Add(demo);
        up.Options.Add(noOperator);
        up.Options.Add(noSweep);
        up.Options.Add(exitAfterDemo);
        up.Options.Add(engine);
        up.Options.Add(snapshotInterval);
        up.Options.Add(finetuneSteps);
        up.SetAction(parse => Run(new UpOptions
        {
            Kubeconfig = parse.GetValue(kubeconfig),
            Port = parse.GetValue(port),
            Nodes = parse.GetValue(nodes),
            StateDirectory = parse.GetValue(stateDir)!,
            Demo = parse.GetValue(demo),
            Operator = !parse.GetValue(noOperator),
            Sweep = !parse.GetValue(noSweep),
            ExitAfterDemo = parse.GetValue(exitAfterDemo),
            EnginePath = parse.GetValue(engine) is { } e ? Path.GetFullPath(e) : null,
            SnapshotInterval = parse.GetValue(snapshotInterval),
            FineTuneSteps = parse.GetValue(finetuneSteps),
        }));
        return up;
    }

    private sealed record UpOptions
    {
        public string? Kubeconfig { get; init; }
        public int Port { get; init; }
        public FileInfo? Nodes { get; init; }
        public required string StateDirectory { get; init; }
        public bool Demo { get; init; }
        public bool Operator { get; init; } = true;
        public bool Sweep { get; init; } = true;
        public bool ExitAfterDemo { get; init; }
        public string? EnginePath { get; init; }
        public int SnapshotInterval { get; init; } = 30;
        public int? FineTuneSteps { get; init; }
    }

    private static int Run(UpOptions up)
    {
        var (kubeconfig, port, nodes, stateDir, demo) = (up.Kubeconfig, up.Port, up.Nodes, up.StateDirectory, up.Demo);
        if (port is < 0 or > 65535)
        {
            Console.Error.WriteLine($"--port: {port} is not a valid port (accepted: 0..65535, 0 = any free port)");
            return ExitCodes.BadInput;
        }
        if (up.SnapshotInterval is < 1 or > 3600)
        {
            Console.Error.WriteLine($"--snapshot-interval: {up.SnapshotInterval} is out of range (accepted: 1..3600 seconds)");
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
        if (up.EnginePath is { } enginePath && !File.Exists(enginePath))
        {
            Console.Error.WriteLine($"--engine: {enginePath} does not exist (build it with make build, or name the lowbit-engine executable)");
            return ExitCodes.BadInput;
        }
        if (up.FineTuneSteps is < 1 or > 100_000)
        {
            Console.Error.WriteLine($"--finetune-steps: {up.FineTuneSteps} is out of range (accepted: 1..100000)");
            return ExitCodes.BadInput;
        }
        if (demo && !up.Operator)
        {
            Console.Error.WriteLine("--demo needs the operator: leave out --no-operator");
            return ExitCodes.BadInput;
        }
        var repoRoot = FindRepoRoot();
        if (demo && repoRoot is null)
        {
            Console.Error.WriteLine("--demo: run it from the Lowbit repository (it needs crds/, examples/local/ and tests/fixtures/tiny-llama)");
            return ExitCodes.BadInput;
        }
        using var stop = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, ctx => { ctx.Cancel = true; stop.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, ctx => { ctx.Cancel = true; stop.Cancel(); });
        return RunAsync(up, nodesConfig, repoRoot, stop.Token).GetAwaiter().GetResult();
    }

    private static async Task<int> RunAsync(UpOptions up, NodesConfig nodesConfig, string? repoRoot, CancellationToken stop)
    {
        var (kubeconfig, port, stateDir) = (up.Kubeconfig, up.Port, up.StateDirectory);
        LocalClusterServer server;
        try
        {
            server = await LocalClusterServer.StartAsync(new LocalClusterOptions
            {
                Port = port,
                StateDirectory = Path.GetFullPath(stateDir),
                SnapshotInterval = TimeSpan.FromSeconds(up.SnapshotInterval),
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
            var seeds = repoRoot is null ? new Dictionary<string, string>() : new Dictionary<string, string>
            {
                [ModelsClaim] = PrepareModelsSeed(repoRoot, Path.Combine(Path.GetFullPath(stateDir), "seed", ModelsClaim)),
            };
            var simulation = await SimulatedCluster.AttachAsync(server, new ClusterSimulationOptions
            {
                Nodes = nodesConfig,
                StateDirectory = Path.Combine(Path.GetFullPath(stateDir), "executor"),
                SeededClaims = seeds,
                EnginePath = up.EnginePath,
            }, TimeProvider.System, loggers, stop).ConfigureAwait(false);
            await using var _ = simulation.ConfigureAwait(false);
            Console.Error.WriteLine($"lowbit local up: {nodesConfig.Nodes.Count} nodes ({string.Join(", ", nodesConfig.Nodes.Select(n => $"{n.Name}:{n.Mode.ToString().ToLowerInvariant()}"))})");
            LocalOperator? op = null;
            try
            {
                if (up.Operator)
                {
                    op = await LocalOperator.StartAsync(server.KubeconfigPath, stop).ConfigureAwait(false);
                    Console.Error.WriteLine($"lowbit local up: operator running in this process (CRDs installed; metrics {op.MetricsUrl})");
                }
                Console.WriteLine($"ready: kubeconfig={server.KubeconfigPath}");
                if (seeds.Count > 0)
                {
                    Console.Error.WriteLine($"lowbit local up: claim {ModelsClaim} holds the tiny model under tiny-llama/ in every namespace: kubectl apply -f examples/local/ works as is");
                }
                if (up.Demo && op is not null && repoRoot is not null)
                {
                    var live = !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
                    if (!live)
                    {
                        // Plain lines for logs: one event a line, never wrapped at a guessed terminal width.
                        AnsiConsole.Profile.Width = 4096;
                    }
                    int code;
                    try
                    {
                        code = await OperatorDemo.RunAsync(server.KubeconfigPath, op, new DemoOptions
                    {
                        RepoRoot = repoRoot,
                        WorkDirectory = Path.Combine(Path.GetFullPath(stateDir), "demo"),
                        EnginePath = up.EnginePath ?? SimulatedCluster.DefaultEnginePath(),
                        ClaimsDirectory = Path.Combine(Path.GetFullPath(stateDir), "executor", "pvc"),
                        Live = live,
                        Sweep = up.Sweep,
                        FineTuneSteps = up.FineTuneSteps,
                    }, AnsiConsole.Console, stop).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        Console.Error.WriteLine($"demo: failed: {ex.GetType().Name}: {ex.Message}");
                        code = 1;
                    }
                    Console.WriteLine(code == 0
                        ? "demo: done; the cluster keeps serving (kubectl --kubeconfig " + server.KubeconfigPath + " get lowbit). Ctrl+C stops."
                        : "demo: not every example became Ready (see above); the cluster keeps serving for inspection. Ctrl+C stops.");
                    if (up.ExitAfterDemo)
                    {
                        return code == 0 ? ExitCodes.Ok : ExitCodes.Failure;
                    }
                }
                await Task.Delay(Timeout.Infinite, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                Console.Error.WriteLine("lowbit local up: stopping; state saved in " + Path.GetFullPath(stateDir));
            }
            finally
            {
                if (op is not null)
                {
                    await op.DisposeAsync().ConfigureAwait(false);
                }
            }
        }
        return ExitCodes.Ok;
    }

    /// <summary>The claim the local examples read models from and write artifacts to.</summary>
    public const string ModelsClaim = "lowbit-models";

    /// <summary>
    /// The local examples read the tiny test model from the claim <c>lowbit-models</c> under <c>tiny-llama/</c>; the
    /// executor copies this seed into the claim the first time a pod of a namespace mounts it.
    /// </summary>
    private static string PrepareModelsSeed(string repoRoot, string seed)
    {
        var source = Path.Combine(repoRoot, "tests", "fixtures", "tiny-llama");
        var target = Path.Combine(seed, "tiny-llama");
        Directory.CreateDirectory(target);
        foreach (var file in Directory.GetFiles(source))
        {
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)), overwrite: true);
        }
        return seed;
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
