using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The embedded API server driven by the real helm 4 binary with a small chart.</summary>
public sealed class HelmTests : IClassFixture<ClusterFixture>
{
    private readonly ClusterFixture _cluster;

    public HelmTests(ClusterFixture cluster) => _cluster = cluster;

    private static string Chart => Path.Combine(ClusterFixture.ChartsDir, "hello");

    [Fact]
    public async Task Does_render_chart_when_helm_template_runs()
    {
        var result = await _cluster.HelmAsync("template", "demo", Chart, "--set", "greeting=hi");
        Assert.Equal(0, result.ExitCode);
        Assert.Contains("name: demo-config", result.StdOut, StringComparison.Ordinal);
        Assert.Contains("greeting: \"hi\"", result.StdOut, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_install_list_and_uninstall_a_release()
    {
        var install = await _cluster.HelmAsync("install", "rel", Chart, "--namespace", "default", "--set", "greeting=hey");
        Assert.True(install.ExitCode == 0, install.StdErr);
        Assert.Contains("STATUS: deployed", install.StdOut, StringComparison.Ordinal);
        var api = _cluster.Server.Api;
        Assert.Equal("hey", (string?)api.Get(BuiltinResources.ConfigMaps, "default", "rel-config")["data"]!["greeting"]);
        Assert.NotNull(api.TryGet(BuiltinResources.Deployments, "default", "rel-web"));
        Assert.NotNull(api.TryGet(BuiltinResources.Services, "default", "rel-svc"));

        var list = await _cluster.HelmAsync("list", "--namespace", "default");
        Assert.Equal(0, list.ExitCode);
        Assert.Matches(@"rel\s+default\s+1\s+.*deployed\s+hello-0\.1\.0", list.StdOut);

        var upgrade = await _cluster.HelmAsync("upgrade", "rel", Chart, "--namespace", "default", "--set", "greeting=again");
        Assert.True(upgrade.ExitCode == 0, upgrade.StdErr);
        Assert.Equal("again", (string?)api.Get(BuiltinResources.ConfigMaps, "default", "rel-config")["data"]!["greeting"]);

        var uninstall = await _cluster.HelmAsync("uninstall", "rel", "--namespace", "default");
        Assert.True(uninstall.ExitCode == 0, uninstall.StdErr);
        Assert.Null(api.TryGet(BuiltinResources.ConfigMaps, "default", "rel-config"));
        Assert.Null(api.TryGet(BuiltinResources.Deployments, "default", "rel-web"));
        var after = await _cluster.HelmAsync("list", "--namespace", "default", "--all");
        Assert.DoesNotContain("rel", after.StdOut.Split('\n').Skip(1).FirstOrDefault() ?? "", StringComparison.Ordinal);
    }
}
