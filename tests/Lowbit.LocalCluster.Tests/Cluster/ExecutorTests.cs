using System.Net;
using System.Net.Sockets;
using k8s.Models;
using Lowbit.LocalCluster.Controllers;
using Lowbit.LocalCluster.Kubelet;
using Lowbit.LocalCluster.Store;
using static Lowbit.LocalCluster.Tests.Cluster.ClusterHarness;

namespace Lowbit.LocalCluster.Tests.Cluster;

/// <summary>Pods on an execute node run as local processes (/bin/sh scripts and python3's http.server).</summary>
public sealed class ExecutorTests
{
    private const string ExecuteNode = """
        nodes:
        - name: local
          mode: execute
          cpu: "4"
          memory: 8Gi
        """;

    private static readonly IReadOnlyList<ImageMapping> Images =
    [
        new("lowbit-engine", "/bin/echo"),
        new("busybox", null),
        new("python", null),
    ];

    private static Task<ClusterHarness> StartExecutorAsync() => StartAsync(ExecuteNode, images: Images);

    private static V1Pod ShellPod(string name, string script, Action<V1Pod>? configure = null) => Pod(name, p =>
    {
        p.Spec.Containers[0].Image = "busybox:1.36";
        p.Spec.Containers[0].Command = ["/bin/sh", "-c"];
        p.Spec.Containers[0].Args = [script];
        configure?.Invoke(p);
    });

    private static V1ContainerStateTerminated? Terminated(V1Pod pod) => pod.Status?.ContainerStatuses?.FirstOrDefault()?.State?.Terminated;

    [Fact]
    public async Task Does_run_the_command_with_env_args_volumes_and_report_exit_code_termination_message_and_log()
    {
        await using var cluster = await StartExecutorAsync();
        cluster.Api.Create(BuiltinResources.Secrets, "default", Json(new V1Secret
        {
            Metadata = new V1ObjectMeta { Name = "hf" },
            StringData = new Dictionary<string, string> { ["token"] = "s3cret" },
        }));
        cluster.Api.Create(BuiltinResources.ConfigMaps, "default", Json(new V1ConfigMap
        {
            Metadata = new V1ObjectMeta { Name = "settings" },
            Data = new Dictionary<string, string> { ["MODE"] = "fast", ["bits.txt"] = "4" },
        }));
        const string Script = """
            echo "greeting=$GREETING arg=$(ARG) token=$HF_TOKEN mode=$MODE pod=$POD_NAME node=$NODE"
            echo scratch > /scratch/file.txt && cat /scratch/file.txt
            echo weights > /models/checkpoint.bin
            cat /etc/settings/bits.txt
            echo "to stderr" >&2
            printf '{"reason":"ModelTooLarge"}' > /dev/termination-log
            exit 7
            """;
        cluster.Create(BuiltinResources.Pods, ShellPod("script", Script, p =>
        {
            var c = p.Spec.Containers[0];
            c.Env =
            [
                new V1EnvVar { Name = "GREETING", Value = "hello" },
                new V1EnvVar { Name = "ARG", Value = "from-env" },
                new V1EnvVar { Name = "HF_TOKEN", ValueFrom = new V1EnvVarSource { SecretKeyRef = new V1SecretKeySelector { Name = "hf", Key = "token" } } },
                new V1EnvVar { Name = "POD_NAME", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "metadata.name" } } },
                new V1EnvVar { Name = "NODE", ValueFrom = new V1EnvVarSource { FieldRef = new V1ObjectFieldSelector { FieldPath = "spec.nodeName" } } },
            ];
            c.EnvFrom = [new V1EnvFromSource { ConfigMapRef = new V1ConfigMapEnvSource { Name = "settings" } }];
            c.VolumeMounts =
            [
                new V1VolumeMount { Name = "scratch", MountPath = "/scratch" },
                new V1VolumeMount { Name = "models", MountPath = "/models" },
                new V1VolumeMount { Name = "settings", MountPath = "/etc/settings" },
            ];
            p.Spec.Volumes =
            [
                new V1Volume { Name = "scratch", EmptyDir = new V1EmptyDirVolumeSource() },
                new V1Volume { Name = "models", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = "model-cache" } },
                new V1Volume { Name = "settings", ConfigMap = new V1ConfigMapVolumeSource { Name = "settings" } },
            ];
        }));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "script", p => p.Status?.Phase == "Failed", "Failed");

        var terminated = Terminated(pod)!;
        Assert.Equal((7, "Error", "{\"reason\":\"ModelTooLarge\"}"), (terminated.ExitCode, terminated.Reason, terminated.Message));
        var log = cluster.Logs.Read("default", "script", "main");
        Assert.Contains("greeting=hello arg=from-env token=s3cret mode=fast pod=script node=local\n", log, StringComparison.Ordinal);
        Assert.Contains("scratch\n", log, StringComparison.Ordinal);
        Assert.Contains("4", log, StringComparison.Ordinal);
        Assert.Contains("to stderr\n", log, StringComparison.Ordinal);
        Assert.Equal("weights\n", File.ReadAllText(Path.Combine(cluster.StateDirectory, "pvc", "default", "model-cache", "checkpoint.bin")));
    }

    [Fact]
    public async Task Does_succeed_a_job_whose_engine_image_maps_to_a_local_executable()
    {
        await using var cluster = await StartExecutorAsync();
        cluster.Create(BuiltinResources.Pods, Pod("engine", p =>
        {
            var c = p.Spec.Containers[0];
            c.Image = "ghcr.io/lowbit/lowbit-engine:0.1";
            c.Command = ["/app/lowbit-engine"];
            c.Args = ["quantize", "--output", "/models/out", "--report=/dev/termination-log"];
            c.VolumeMounts = [new V1VolumeMount { Name = "models", MountPath = "/models" }];
            p.Spec.Volumes = [new V1Volume { Name = "models", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = "m" } }];
        }));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "engine", p => p.Status?.Phase == "Succeeded", "Succeeded");

        Assert.Equal((0, "Completed"), (Terminated(pod)!.ExitCode, Terminated(pod)!.Reason));
        var models = Path.Combine(cluster.StateDirectory, "pvc", "default", "m");
        var log = cluster.Logs.Read("default", "engine", "main");
        Assert.StartsWith($"quantize --output {models}/out --report=", log, StringComparison.Ordinal);
        Assert.DoesNotContain("/dev/termination-log", log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_become_ready_from_the_http_readiness_probe_and_stop_the_process_when_deleted()
    {
        await using var cluster = await StartExecutorAsync();
        var port = FreePort();
        cluster.Create(BuiltinResources.Pods, Pod("server", p =>
        {
            p.Spec.RestartPolicy = "Always";
            p.Spec.TerminationGracePeriodSeconds = 5;
            var c = p.Spec.Containers[0];
            c.Image = "python:3.12-slim";
            c.Command = ["python3", "-m", "http.server", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1"];
            c.Ports = [new V1ContainerPort { Name = "http", ContainerPort = port }];
            c.ReadinessProbe = new V1Probe { HttpGet = new V1HTTPGetAction { Path = "/", Port = "http" }, PeriodSeconds = 1 };
        }));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "server", PodControl.IsReady, "Ready");
        Assert.Equal("Running", pod.Status.Phase);
        Assert.True(pod.Status.ContainerStatuses[0].Ready);
        Assert.True(CanConnect(port));

        cluster.Api.Delete(BuiltinResources.Pods, "default", "server");
        await cluster.WaitGoneAsync(BuiltinResources.Pods, "default", "server");

        Assert.False(CanConnect(port));
    }

    [Fact]
    public async Task Does_give_a_seeded_claim_its_content_in_any_namespace_and_keep_what_pods_wrote()
    {
        var seed = Directory.CreateTempSubdirectory("lowbit-seed-").FullName;
        Directory.CreateDirectory(Path.Combine(seed, "tiny"));
        await File.WriteAllTextAsync(Path.Combine(seed, "tiny", "config.json"), "{\"seeded\": true}");
        try
        {
            await using var cluster = await StartAsync(ExecuteNode, images: Images, seededClaims: new Dictionary<string, string> { ["models"] = seed });
            V1Pod Reader(string name, string ns, string script) => ShellPod(name, script, p =>
            {
                p.Metadata.NamespaceProperty = ns;
                p.Spec.Volumes = [new V1Volume { Name = "m", PersistentVolumeClaim = new V1PersistentVolumeClaimVolumeSource { ClaimName = "models" } }];
                p.Spec.Containers[0].VolumeMounts = [new V1VolumeMount { Name = "m", MountPath = "/models" }];
            });
            foreach (var ns in new[] { "team-a", "team-b" })
            {
                cluster.Api.Create(BuiltinResources.Namespaces, null, Json(new V1Namespace { Metadata = new V1ObjectMeta { Name = ns } }));
            }
            cluster.Create(BuiltinResources.Pods, Reader("first", "team-a", "cat /models/tiny/config.json && echo written > /models/out.txt"));
            var first = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "team-a", "first", p => Terminated(p) is not null, "terminated");
            cluster.Create(BuiltinResources.Pods, Reader("second", "team-a", "cat /models/out.txt /models/tiny/config.json"));
            cluster.Create(BuiltinResources.Pods, Reader("other", "team-b", "cat /models/tiny/config.json; test ! -e /models/out.txt"));
            var second = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "team-a", "second", p => Terminated(p) is not null, "terminated");
            var other = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "team-b", "other", p => Terminated(p) is not null, "terminated");

            Assert.Equal(0, Terminated(first)!.ExitCode);
            Assert.Contains("\"seeded\": true", cluster.Logs.Read("team-a", "first", "main"), StringComparison.Ordinal);
            Assert.Equal(0, Terminated(second)!.ExitCode);
            Assert.Contains("written", cluster.Logs.Read("team-a", "second", "main"), StringComparison.Ordinal);
            Assert.Equal(0, Terminated(other)!.ExitCode);
            Assert.True(File.Exists(Path.Combine(seed, "tiny", "config.json")), "the seed itself is never moved or changed");
            Assert.False(File.Exists(Path.Combine(seed, "out.txt")));
        }
        finally
        {
            Directory.Delete(seed, recursive: true);
        }
    }

    [Fact]
    public async Task Does_refuse_an_image_it_cannot_run_with_ErrImagePull_naming_the_known_images()
    {
        await using var cluster = await StartExecutorAsync();
        cluster.Create(BuiltinResources.Pods, Pod("nginx", p => p.Spec.Containers[0].Image = "nginx:1.27"));

        var pod = await cluster.WaitAsync<V1Pod>(BuiltinResources.Pods, "default", "nginx",
            p => p.Status?.ContainerStatuses?[0].State?.Waiting?.Reason == "ErrImagePull", "ErrImagePull");

        Assert.Equal("Pending", pod.Status.Phase);
        Assert.Equal(
            "image \"nginx:1.27\" cannot run on the local executor; known images: *lowbit-engine* (runs /bin/echo), *busybox* (runs the container command on the host), *python* (runs the container command on the host)",
            pod.Status.ContainerStatuses[0].State.Waiting.Message);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    private static bool CanConnect(int port)
    {
        try
        {
            using var client = new TcpClient();
            client.Connect(IPAddress.Loopback, port);
            return true;
        }
        catch (SocketException)
        {
            return false;
        }
    }
}
