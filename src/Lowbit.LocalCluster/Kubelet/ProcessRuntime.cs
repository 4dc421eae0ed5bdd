using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using k8s.Models;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// Which images an <c>execute</c> node can run: the first entry whose <see cref="Match"/> occurs in the image
/// reference wins. <see cref="Executable"/> replaces the image's entrypoint (command[0], or prepended to args when
/// the container has no command); null runs the container's command as a host program (e.g. busybox → /bin/sh).
/// </summary>
public sealed record ImageMapping(string Match, string? Executable);

/// <summary>Settings of the local executor.</summary>
public sealed record ExecutorOptions
{
    /// <summary>Folder for pod folders (emptyDir volumes, termination logs) and claims (<c>pvc/&lt;namespace&gt;/&lt;claim&gt;</c>).</summary>
    public required string StateDirectory { get; init; }

    public IReadOnlyList<ImageMapping> Images { get; init; } = [];

    /// <summary>
    /// Claims that exist with content, like a pre-provisioned volume: claim name → a folder whose files are copied into
    /// the claim's folder of a namespace the first time a pod there mounts it (files already there are kept).
    /// </summary>
    public IReadOnlyDictionary<string, string> SeededClaims { get; init; } = new Dictionary<string, string>();

    /// <summary>
    /// How pods reach the API server (a service-account token, its CA and KUBECONFIG, see <see cref="ServiceAccountCredentials"/>);
    /// null: pods get no credentials.
    /// </summary>
    public PodApiAccess? ApiAccess { get; init; }

    /// <summary>
    /// The default map: lowbit-engine images run <paramref name="engine"/>, lowbit-operator images (the Helm chart's)
    /// run <paramref name="operatorPath"/>; common base images run their command on the host.
    /// </summary>
    public static IReadOnlyList<ImageMapping> DefaultImages(string engine, string? operatorPath = null) =>
    [
        new("lowbit-engine", engine),
        .. operatorPath is null ? Array.Empty<ImageMapping>() : [new ImageMapping("lowbit-operator", operatorPath)],
        new("busybox", null),
        new("alpine", null),
        new("debian", null),
        new("ubuntu", null),
        new("python", null),
    ];
}

/// <summary>
/// Containers on an <c>execute</c> node run as local processes. Paths cannot be mounted, so they are mapped:
/// every volume mount's mountPath (and the terminationMessagePath, default /dev/termination-log) that appears
/// at the start of a path in command, args, env values or workingDir is rewritten to a local folder or file
/// (emptyDir → &lt;pod dir&gt;/volumes/&lt;name&gt;, persistentVolumeClaim → &lt;state&gt;/pvc/&lt;namespace&gt;/&lt;claim&gt;,
/// hostPath → the host path itself, configMap/secret → files written into &lt;pod dir&gt;/volumes/&lt;name&gt;).
/// The process also gets <c>LOWBIT_TERMINATION_LOG</c> (the termination file) and <c>LOWBIT_VOLUME_&lt;NAME&gt;</c>
/// for each mounted volume. stdout and stderr become the container log; the exit code and the termination file
/// (or, with FallbackToLogsOnError, the log tail) become the terminated state. Readiness comes from the httpGet
/// or tcpSocket readiness probe on 127.0.0.1. Deletion sends SIGTERM, then kills the process tree after the grace period.
/// </summary>
public sealed partial class ProcessRuntime(ClusterApi api, ExecutorOptions options, TimeProvider time) : IContainerRuntime
{
    private const int MaxTerminationMessage = 4096;
    private static readonly HttpClient Probe = new() { Timeout = TimeSpan.FromSeconds(1) };

    public void CheckImage(V1Pod pod, V1Container container) => Resolve(container);

    public bool ReadyOnStart(V1Pod pod, V1Container container) =>
        container.ReadinessProbe is null || (container.ReadinessProbe.HttpGet is null && container.ReadinessProbe.TcpSocket is null);

    public async Task<ContainerExit> RunAsync(ContainerRun run)
    {
        var pod = run.Pod;
        var container = run.Container;
        var mapping = Resolve(container);
        var podDir = PodDirectory(pod);
        var containerDir = Path.Combine(podDir, "containers", container.Name);
        Directory.CreateDirectory(containerDir);
        var terminationFile = Path.Combine(containerDir, $"termination-log.{run.Attempt}");
        File.WriteAllText(terminationFile, "");
        var paths = PathMap(pod, container, terminationFile);
        string? kubeconfig = null;
        if (options.ApiAccess is { } access && ServiceAccountCredentials.Wanted(pod))
        {
            var credentials = Path.Combine(podDir, "serviceaccount");
            kubeconfig = ServiceAccountCredentials.Ensure(access, pod, credentials);
            if (!paths.Any(p => p.From == ServiceAccountCredentials.MountPath))
            {
                paths.Add((ServiceAccountCredentials.MountPath, credentials));
            }
        }

        var argv = new List<string>();
        var command = container.Command ?? [];
        if (mapping.Executable is { } executable)
        {
            argv.Add(executable);
            argv.AddRange(command.Skip(1));
        }
        else if (command.Count > 0)
        {
            argv.AddRange(command);
        }
        argv.AddRange(container.Args ?? []);
        if (argv.Count == 0)
        {
            return new ContainerExit(128, "StartError", $"container {container.Name} has no command; image {container.Image} has no known entrypoint on the local executor");
        }
        // Container paths are mapped to local folders; the image's local executable is already a host path and is
        // left alone (a checkout under /tmp must not be rewritten by a container mount at /tmp).
        var hostExecutable = mapping.Executable is not null ? 1 : 0;
        argv = argv.Take(hostExecutable)
            .Concat(argv.Skip(hostExecutable).Select(a => Rewrite(ContainerEnvironment.Expand(a, run.Environment), paths)))
            .ToList();

        var start = new ProcessStartInfo(argv[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = container.WorkingDir is { Length: > 0 } wd ? Rewrite(wd, paths) : containerDir,
        };
        foreach (var a in argv.Skip(1))
        {
            start.ArgumentList.Add(a);
        }
        Directory.CreateDirectory(start.WorkingDirectory);
        // A pod never sees the host's kubeconfig: it connects with its own service account's, or not at all.
        start.Environment.Remove("KUBECONFIG");
        if (kubeconfig is not null)
        {
            foreach (var (k, v) in ServiceAccountCredentials.Environment(options.ApiAccess!, kubeconfig))
            {
                start.Environment[k] = v;
            }
        }
        foreach (var (k, v) in run.Environment)
        {
            start.Environment[k] = Rewrite(v, paths);
        }
        start.Environment["HOSTNAME"] = pod.Metadata.Name;
        start.Environment["LOWBIT_TERMINATION_LOG"] = terminationFile;
        start.Environment["LOWBIT_POD_IP"] = run.PodIp; // EngineEnv.PodIp: serve listens there
        foreach (var mount in container.VolumeMounts ?? [])
        {
            start.Environment[$"LOWBIT_VOLUME_{EnvName(mount.Name)}"] = paths.First(p => p.From == mount.MountPath.TrimEnd('/')).To;
        }

        var log = new StringBuilder();
        using var process = new Process { StartInfo = start, EnableRaisingEvents = true };
        void OnLine(string? line)
        {
            if (line is null)
            {
                return;
            }
            lock (log)
            {
                log.Append(line).Append('\n');
                if (log.Length > 64 * 1024)
                {
                    log.Remove(0, log.Length - (32 * 1024));
                }
            }
            run.WriteLog(line + "\n");
        }
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        try
        {
            process.Start();
        }
        catch (Exception ex) when (ex is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            var message = $"failed to start container {container.Name}: exec: \"{argv[0]}\": {ex.Message}";
            run.WriteLog(message + "\n");
            return new ContainerExit(128, "StartError", message);
        }
        var pidFile = Path.Combine(containerDir, OrphanProcesses.FileName);
        OrphanProcesses.Record(pidFile, process);
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        using var probing = CancellationTokenSource.CreateLinkedTokenSource(run.Stop);
        var probe = ProbeAsync(container, run.PodIp, run.SetReady, probing.Token);
        var exited = process.WaitForExitAsync(CancellationToken.None);
        try
        {
            await exited.WaitAsync(run.Stop).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Terminate(process);
            try
            {
                await exited.WaitAsync(run.GracePeriod(), time).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                process.Kill(entireProcessTree: true);
                await exited.ConfigureAwait(false);
            }
        }
        await process.WaitForExitAsync().ConfigureAwait(false);
        File.Delete(pidFile);
        await probing.CancelAsync().ConfigureAwait(false);
        await probe.ConfigureAwait(false);
        var exitCode = process.ExitCode;
        if (exitCode < 0 || exitCode > 255)
        {
            exitCode = 128 + 9;
        }
        var messageText = ReadTermination(terminationFile);
        if (string.IsNullOrEmpty(messageText) && exitCode != 0 && container.TerminationMessagePolicy == "FallbackToLogsOnError")
        {
            lock (log)
            {
                messageText = Tail(log.ToString());
            }
        }
        return new ContainerExit(exitCode, exitCode == 0 ? "Completed" : "Error", messageText);
    }

    public void Cleanup(V1Pod pod)
    {
        try
        {
            var dir = PodDirectory(pod);
            if (options.ApiAccess is { } access)
            {
                ServiceAccountCredentials.Revoke(access, Path.Combine(dir, "serviceaccount"));
            }
            if (Directory.Exists(dir))
            {
                Directory.Delete(dir, recursive: true);
            }
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private ImageMapping Resolve(V1Container container)
    {
        var image = container.Image ?? "";
        if (image.Length == 0)
        {
            throw new ImagePullException("InvalidImageName", $"container {container.Name} has no image");
        }
        return options.Images.FirstOrDefault(m => image.Contains(m.Match, StringComparison.Ordinal))
            ?? throw new ImagePullException("ErrImagePull",
                $"image \"{image}\" cannot run on the local executor; known images: {string.Join(", ", options.Images.Select(m => m.Executable is null ? $"*{m.Match}* (runs the container command on the host)" : $"*{m.Match}* (runs {m.Executable})"))}");
    }

    private string PodDirectory(V1Pod pod) =>
        Path.Combine(options.StateDirectory, "pods", $"{pod.Metadata.NamespaceProperty}_{pod.Metadata.Name}_{pod.Metadata.Uid}");

    /// <summary>mountPath → local path, longest first (so /data/models wins over /data).</summary>
    private List<(string From, string To)> PathMap(V1Pod pod, V1Container container, string terminationFile)
    {
        var podDir = PodDirectory(pod);
        var volumes = (pod.Spec.Volumes ?? []).ToDictionary(v => v.Name, StringComparer.Ordinal);
        var map = new List<(string From, string To)>();
        foreach (var mount in container.VolumeMounts ?? [])
        {
            if (!volumes.TryGetValue(mount.Name, out var volume))
            {
                throw new ContainerConfigException($"volume mount {mount.Name} of container {container.Name} names no volume of the pod");
            }
            var root = VolumeDirectory(pod, volume, podDir);
            var local = string.IsNullOrEmpty(mount.SubPath) ? root : Path.Combine(root, mount.SubPath);
            Directory.CreateDirectory(local);
            map.Add((mount.MountPath.TrimEnd('/'), local));
        }
        map.Add((container.TerminationMessagePath ?? "/dev/termination-log", terminationFile));
        return map.OrderByDescending(m => m.From.Length).ToList();
    }

    private string VolumeDirectory(V1Pod pod, V1Volume volume, string podDir)
    {
        if (volume.PersistentVolumeClaim is { } claim)
        {
            var claimDir = Path.Combine(options.StateDirectory, "pvc", pod.Metadata.NamespaceProperty, claim.ClaimName);
            if (options.SeededClaims.TryGetValue(claim.ClaimName, out var seed) && !Directory.Exists(claimDir))
            {
                Seed(seed, claimDir);
            }
            return claimDir;
        }
        if (volume.HostPath is { } hostPath)
        {
            return hostPath.Path;
        }
        var dir = Path.Combine(podDir, "volumes", volume.Name);
        Directory.CreateDirectory(dir);
        if (volume.ConfigMap is { } configMap)
        {
            Project(dir, ContainerEnvironment.ConfigMapData(api, pod.Metadata.NamespaceProperty, configMap.Name, configMap.Optional == true));
        }
        if (volume.Secret is { } secret)
        {
            Project(dir, ContainerEnvironment.SecretData(api, pod.Metadata.NamespaceProperty, secret.SecretName, secret.Optional == true));
        }
        return dir;
    }

    private static void Project(string dir, Dictionary<string, string>? data)
    {
        foreach (var (k, v) in data ?? [])
        {
            File.WriteAllText(Path.Combine(dir, k), v);
        }
    }

    /// <summary>
    /// Maps container paths to local ones in one left-to-right pass: at each position the longest mount path that
    /// matches there as whole path segments is replaced, and the replacement is never scanned again (a local path
    /// under /tmp must not be rewritten a second time by a container mount at /tmp).
    /// </summary>
    internal static string Rewrite(string value, IReadOnlyList<(string From, string To)> paths)
    {
        var result = new System.Text.StringBuilder(value.Length);
        var i = 0;
        while (i < value.Length)
        {
            (string From, string To)? best = null;
            foreach (var path in paths)
            {
                if (path.From.Length > (best?.From.Length ?? 0) && IsSegmentMatch(value, i, path.From))
                {
                    best = path;
                }
            }
            if (best is { } match)
            {
                result.Append(match.To);
                i += match.From.Length;
            }
            else
            {
                result.Append(value[i]);
                i++;
            }
        }
        return result.ToString();
    }

    // A whole path segment: not part of a longer name on either side (/data must not match /database or /x/data).
    private static bool IsSegmentMatch(string value, int index, string from)
    {
        if (from.Length == 0 || string.CompareOrdinal(value, index, from, 0, from.Length) != 0)
        {
            return false;
        }
        var end = index + from.Length;
        var startsPath = index == 0 || !IsPathChar(value[index - 1]);
        var endsPath = end == value.Length || value[end] == '/' || !IsPathChar(value[end]);
        return startsPath && endsPath;
    }

    private static bool IsPathChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or '/';

    private async Task ProbeAsync(V1Container container, string podIp, Action<bool> setReady, CancellationToken cancellationToken)
    {
        var probe = container.ReadinessProbe;
        if (probe is null || (probe.HttpGet is null && probe.TcpSocket is null))
        {
            setReady(true);
            return;
        }
        var period = TimeSpan.FromSeconds(Math.Min(probe.PeriodSeconds ?? 10, 1));
        var failures = 0;
        try
        {
            if (probe.InitialDelaySeconds is > 0)
            {
                await Task.Delay(TimeSpan.FromSeconds(probe.InitialDelaySeconds.Value), time, cancellationToken).ConfigureAwait(false);
            }
            while (!cancellationToken.IsCancellationRequested)
            {
                var ok = await CheckAsync(container, podIp, probe, cancellationToken).ConfigureAwait(false)
                    || (podIp != "127.0.0.1" && await CheckAsync(container, "127.0.0.1", probe, cancellationToken).ConfigureAwait(false));
                failures = ok ? 0 : failures + 1;
                if (ok)
                {
                    setReady(true);
                }
                else if (failures >= (probe.FailureThreshold ?? 3))
                {
                    setReady(false);
                }
                await Task.Delay(period, time, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private static async Task<bool> CheckAsync(V1Container container, string host, V1Probe probe, CancellationToken cancellationToken)
    {
        try
        {
            if (probe.HttpGet is { } get)
            {
                var port = PortOf(container, get.Port);
                var path = string.IsNullOrEmpty(get.Path) ? "/" : get.Path;
                using var response = await Probe.GetAsync(new Uri($"http://{host}:{port}{(path.StartsWith('/') ? path : "/" + path)}"), cancellationToken).ConfigureAwait(false);
                return (int)response.StatusCode is >= 200 and < 400;
            }
            using var client = new TcpClient();
            await client.ConnectAsync(host, PortOf(container, probe.TcpSocket!.Port), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (ex is HttpRequestException or SocketException or TaskCanceledException or IOException)
        {
            return false;
        }
    }

    /// <summary>Copies a seed folder into a new claim folder (through a temporary name, so a half copy is never seen).</summary>
    private static void Seed(string seed, string claimDir)
    {
        var staging = claimDir + ".seeding-" + Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture);
        foreach (var file in Directory.EnumerateFiles(seed, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(staging, Path.GetRelativePath(seed, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target, overwrite: true);
        }
        Directory.CreateDirectory(staging);
        try
        {
            Directory.Move(staging, claimDir);
        }
        catch (IOException) when (Directory.Exists(claimDir))
        {
            Directory.Delete(staging, recursive: true);
        }
    }

    private static int PortOf(V1Container container, IntOrString port)
    {
        var text = port.Value;
        return int.TryParse(text, System.Globalization.CultureInfo.InvariantCulture, out var number) ? number
            : container.Ports?.FirstOrDefault(p => p.Name == text)?.ContainerPort ?? 0;
    }

    private static string? ReadTermination(string path)
    {
        if (!File.Exists(path))
        {
            return null;
        }
        using var stream = File.OpenRead(path);
        var buffer = new byte[MaxTerminationMessage];
        var read = stream.Read(buffer, 0, buffer.Length);
        var text = Encoding.UTF8.GetString(buffer, 0, read);
        return text.Length == 0 ? null : text;
    }

    /// <summary>The last 80 lines, at most 2048 bytes (the kubelet's FallbackToLogsOnError).</summary>
    private static string Tail(string log)
    {
        var lines = log.TrimEnd('\n').Split('\n');
        var tail = string.Join('\n', lines.Skip(Math.Max(0, lines.Length - 80)));
        return tail.Length > 2048 ? tail[^2048..] : tail;
    }

    private static string EnvName(string volume) => new(volume.ToUpperInvariant().Select(c => char.IsAsciiLetterOrDigit(c) ? c : '_').ToArray());

    private static void Terminate(Process process)
    {
        try
        {
            if (OperatingSystem.IsWindows() || SysKill(process.Id, 15) != 0)
            {
                process.Kill(entireProcessTree: true);
            }
        }
        catch (InvalidOperationException)
        {
        }
    }

    // DllImport rather than LibraryImport: the generated marshalling would need unsafe code for this one call.
    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int SysKill(int pid, int signal);
}
