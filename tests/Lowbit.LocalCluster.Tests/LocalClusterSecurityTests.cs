using System.Net;
using System.Net.Http.Headers;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary><c>lowbit local up</c> security (issue 17, item 6): the bearer token is checked, files are 0600.</summary>
public sealed class LocalClusterSecurityTests : IDisposable
{
    private readonly string _state = Directory.CreateTempSubdirectory("lowbit-sec-").FullName;

    public void Dispose() => Directory.Delete(_state, recursive: true);

    [Fact]
    public async Task Does_answer_401_without_the_kubeconfig_token_and_serve_with_it()
    {
        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        using var http = new HttpClient { BaseAddress = server.Url };

        using var anonymous = await http.GetAsync("/api/v1/namespaces");
        using var wrong = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/api/v1/namespaces") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", "not-the-token") } });
        using var right = await http.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/api/v1/namespaces") { Headers = { Authorization = new AuthenticationHeaderValue("Bearer", server.Token) } });
        using var version = await http.GetAsync("/version");

        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Contains("\"reason\":\"Unauthorized\"", await anonymous.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Unauthorized, wrong.StatusCode);
        Assert.Equal(HttpStatusCode.OK, right.StatusCode);
        Assert.Equal(HttpStatusCode.OK, version.StatusCode);
    }

    [Fact]
    [System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
    public async Task Does_write_state_token_and_kubeconfig_readable_by_the_owner_only_and_keep_the_token_across_restarts()
    {
        string token;
        await using (var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false, StateDirectory = _state }))
        {
            token = server.Token;
            server.SaveState();
        }
        foreach (var file in new[] { StateSnapshot.FileName, "kubeconfig", "token" })
        {
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(Path.Combine(_state, file)));
        }

        await using var restarted = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false, StateDirectory = _state });
        Assert.Equal(token, restarted.Token);
    }
}
