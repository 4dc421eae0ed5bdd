using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Sources;

namespace Lowbit.Engine.Tests;

/// <summary>A local server that answers like the hub's resolve endpoint: bearer token, 404s, Range requests.</summary>
internal sealed class FakeHub : IDisposable
{
    private readonly HttpListener _listener = new();
    private readonly Dictionary<string, byte[]> _files;
    private readonly string? _token;
    private readonly Task _loop;

    public FakeHub(Dictionary<string, byte[]> files, string? token)
    {
        _files = files;
        _token = token;
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        var port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        Endpoint = $"http://127.0.0.1:{port}";
        _listener.Prefixes.Add(Endpoint + "/");
        _listener.Start();
        _loop = Task.Run(Serve);
    }

    public string Endpoint { get; }

    public ConcurrentQueue<string> Requests { get; } = new();

    /// <summary>The Authorization header of every request ("" when absent).</summary>
    public ConcurrentQueue<string> Authorizations { get; } = new();

    /// <summary>ETag (quoted) per file key, as the hub's resolve endpoint sends the SHA-256 of LFS files.</summary>
    public Dictionary<string, string> ETags { get; } = new();

    /// <summary>The first response of each file sends this many bytes, then nothing more (a stalled connection).</summary>
    public int? StallAfter { get; init; }

    private readonly HashSet<string> _stalled = new();
    private readonly CancellationTokenSource _stop = new();

    private async Task Serve()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await _listener.GetContextAsync();
            }
            catch (Exception ex) when (ex is HttpListenerException or ObjectDisposedException)
            {
                return;
            }
            var request = context.Request;
            var response = context.Response;
            var range = request.Headers["Range"];
            Requests.Enqueue($"{request.Url!.AbsolutePath} {range}".Trim());
            Authorizations.Enqueue(request.Headers["Authorization"] ?? "");
            if (_token is not null && request.Headers["Authorization"] != $"Bearer {_token}")
            {
                response.StatusCode = 401;
                response.Close();
                continue;
            }
            // Path: /{org}/{name}/resolve/{revision}/{file}
            var key = request.Url.AbsolutePath.TrimStart('/');
            if (!_files.TryGetValue(key, out var body))
            {
                response.StatusCode = 404;
                response.Close();
                continue;
            }
            var from = 0;
            if (range is not null && range.StartsWith("bytes=", StringComparison.Ordinal))
            {
                from = int.Parse(range["bytes=".Length..].TrimEnd('-'), System.Globalization.CultureInfo.InvariantCulture);
                response.StatusCode = 206;
                response.Headers["Content-Range"] = $"bytes {from}-{body.Length - 1}/{body.Length}";
            }
            response.ContentLength64 = body.Length - from;
            if (ETags.TryGetValue(key, out var etag))
            {
                response.Headers["ETag"] = etag;
            }
            if (StallAfter is { } stall && _stalled.Add(key))
            {
                await response.OutputStream.WriteAsync(body.AsMemory(from, Math.Min(stall, body.Length - from)));
                await response.OutputStream.FlushAsync();
                _ = Task.Delay(TimeSpan.FromSeconds(20), _stop.Token).ContinueWith(_ => response.Abort(), TaskScheduler.Default);
                continue;
            }
            await response.OutputStream.WriteAsync(body.AsMemory(from));
            response.Close();
        }
    }

    public void Dispose()
    {
        _stop.Cancel();
        _listener.Stop();
        _listener.Close();
        _loop.Wait(TimeSpan.FromSeconds(5));
    }
}

public sealed class ModelSourceTests : IDisposable
{
    private readonly TempDir _cache = new();
    private readonly Dictionary<string, string?> _saved = new();

    public ModelSourceTests()
    {
        foreach (var name in new[] { EngineEnv.HfEndpoint, EngineEnv.HfToken, EngineEnv.CacheDir })
        {
            _saved[name] = Environment.GetEnvironmentVariable(name);
        }
        Environment.SetEnvironmentVariable(EngineEnv.CacheDir, _cache.Path);
    }

    public void Dispose()
    {
        foreach (var (name, value) in _saved)
        {
            Environment.SetEnvironmentVariable(name, value);
        }
        _cache.Dispose();
    }

    private static Dictionary<string, byte[]> FixtureFiles(string prefix) =>
        new[] { "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json" }
            .ToDictionary(f => $"{prefix}/{f}", f => File.ReadAllBytes(Path.Combine(TokenizerTests.FixtureDirectory, f)));

    private static (ModelSource Source, List<EngineEvent> Events, HttpClient Http) NewSource()
    {
        var events = new List<EngineEvent>();
        var http = ModelSource.CreateHttpClient();
        return (new ModelSource(http, events.Add, TimeProvider.System), events, http);
    }

    [Fact]
    public void Does_download_a_hub_repo_with_the_bearer_token()
    {
        using var hub = new FakeHub(FixtureFiles("lowbit/tiny-llama/resolve/v1"), token: "secret");
        Environment.SetEnvironmentVariable(EngineEnv.HfEndpoint, hub.Endpoint);
        Environment.SetEnvironmentVariable(EngineEnv.HfToken, "secret");
        var (source, events, http) = NewSource();
        using var _ = http;

        var directory = source.Resolve("lowbit/tiny-llama", "v1", weights: true);

        Assert.Equal(File.ReadAllBytes(Path.Combine(TokenizerTests.FixtureDirectory, "model.safetensors")), File.ReadAllBytes(Path.Combine(directory, "model.safetensors")));
        Assert.True(File.Exists(Path.Combine(directory, "tokenizer.json")));
        Assert.False(File.Exists(Path.Combine(directory, "tokenizer.model")));
        Assert.Contains(hub.Requests, r => r == "/lowbit/tiny-llama/resolve/v1/model.safetensors.index.json");
        var download = Assert.Single(events.OfType<DownloadEvent>(), e => e.File == "model.safetensors" && e.Bytes == e.TotalBytes);
        Assert.Equal(6_566_432, download.TotalBytes);
    }

    [Fact]
    public void Does_fail_with_bad_input_naming_hf_token_when_the_hub_answers_401()
    {
        using var hub = new FakeHub(FixtureFiles("lowbit/tiny-llama/resolve/main"), token: "secret");
        Environment.SetEnvironmentVariable(EngineEnv.HfEndpoint, hub.Endpoint);
        Environment.SetEnvironmentVariable(EngineEnv.HfToken, null);
        var (source, _, http) = NewSource();
        using var __ = http;

        var ex = Assert.Throws<EngineInputException>(() => source.Resolve("lowbit/tiny-llama", null, weights: true));

        Assert.Contains("401", ex.Message, StringComparison.Ordinal);
        Assert.Contains("HF_TOKEN", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_fail_with_bad_input_when_the_repo_has_no_config()
    {
        using var hub = new FakeHub([], token: null);
        Environment.SetEnvironmentVariable(EngineEnv.HfEndpoint, hub.Endpoint);
        var (source, _, http) = NewSource();
        using var __ = http;

        var ex = Assert.Throws<EngineInputException>(() => source.Resolve("lowbit/missing", "main", weights: true));

        Assert.Contains("/lowbit/missing/resolve/main/config.json not found (404)", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_resume_a_partial_download_with_a_range_request()
    {
        var files = FixtureFiles("models/tiny");
        using var hub = new FakeHub(files, token: null);
        var (source, _, http) = NewSource();
        using var __ = http;
        var directory = Path.Combine(_cache.Path, "resume");
        Directory.CreateDirectory(directory);
        var full = files["models/tiny/model.safetensors"];
        File.WriteAllBytes(Path.Combine(directory, "model.safetensors.part"), full[..1_000_000]);

        var path = await source.FetchAsync(hub.Endpoint + "/models/tiny", null, directory, "model.safetensors", required: true, CancellationToken.None);

        Assert.Contains("/models/tiny/model.safetensors bytes=1000000-", hub.Requests);
        Assert.Equal(full, File.ReadAllBytes(path!));
        Assert.False(File.Exists(path + ".part"));
    }

    [Fact]
    public void Does_not_send_hf_token_to_a_url_prefix_source()
    {
        using var hub = new FakeHub(FixtureFiles("models/tiny"), token: null);
        Environment.SetEnvironmentVariable(EngineEnv.HfToken, "hf_canary_3f9a");
        var (source, _, http) = NewSource();
        using var __ = http;

        source.Resolve(hub.Endpoint + "/models/tiny", null, weights: true);

        Assert.NotEmpty(hub.Authorizations);
        Assert.All(hub.Authorizations, a => Assert.Equal("", a));
    }

    [Fact]
    public async Task Does_resume_a_stalled_download_after_the_progress_watchdog_fires()
    {
        var files = FixtureFiles("models/tiny");
        using var hub = new FakeHub(files, token: null) { StallAfter = 100_000 };
        using var http = ModelSource.CreateHttpClient();
        var events = new List<EngineEvent>();
        var source = new ModelSource(http, events.Add, TimeProvider.System, new DownloadLimits { StallTimeout = TimeSpan.FromMilliseconds(500), Attempts = 3 });
        var directory = Path.Combine(_cache.Path, "stall");
        Directory.CreateDirectory(directory);

        var path = await source.FetchAsync(hub.Endpoint + "/models/tiny", null, directory, "model.safetensors", required: true, CancellationToken.None);

        Assert.Equal(files["models/tiny/model.safetensors"], File.ReadAllBytes(path!));
        Assert.Contains("/models/tiny/model.safetensors bytes=100000-", hub.Requests);
        Assert.Contains(events.OfType<LogEvent>(), e => e.Message.Contains("sent no data", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Does_fail_naming_the_stall_when_every_attempt_stalls()
    {
        using var hub = new FakeHub(FixtureFiles("models/tiny"), token: null) { StallAfter = 10 };
        using var http = ModelSource.CreateHttpClient();
        var source = new ModelSource(http, _ => { }, TimeProvider.System, new DownloadLimits { StallTimeout = TimeSpan.FromMilliseconds(300), Attempts = 1 });
        var directory = Path.Combine(_cache.Path, "stall-fail");
        Directory.CreateDirectory(directory);

        var ex = await Assert.ThrowsAsync<IOException>(() => source.FetchAsync(hub.Endpoint + "/models/tiny", null, directory, "config.json", required: true, CancellationToken.None));

        Assert.Contains("sent no data", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_a_hub_file_whose_sha256_differs_from_the_etag_and_accept_a_matching_one()
    {
        var files = FixtureFiles("lowbit/tiny-llama/resolve/main");
        using var hub = new FakeHub(files, token: null);
        Environment.SetEnvironmentVariable(EngineEnv.HfEndpoint, hub.Endpoint);
        Environment.SetEnvironmentVariable(EngineEnv.HfToken, null);
        var key = "lowbit/tiny-llama/resolve/main/model.safetensors";
        hub.ETags[key] = $"\"{new string('a', 64)}\"";
        var (source, _, http) = NewSource();
        using var __ = http;

        var ex = Assert.Throws<IOException>(() => source.Resolve("lowbit/tiny-llama", null, weights: true));
        Assert.Contains("SHA-256", ex.Message, StringComparison.Ordinal);

        hub.ETags[key] = $"\"{Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(files[key]))}\"";
        var directory = source.Resolve("lowbit/tiny-llama", null, weights: true);
        Assert.Equal(files[key], File.ReadAllBytes(Path.Combine(directory, "model.safetensors")));
    }

    [Fact]
    public void Does_keep_the_hf_token_out_of_output_and_result_when_the_hub_refuses_it()
    {
        const string canary = "hf_canary_7d21c0";
        using var hub = new FakeHub(FixtureFiles("lowbit/tiny-llama/resolve/main"), token: "another");
        Environment.SetEnvironmentVariable(EngineEnv.HfEndpoint, hub.Endpoint);
        Environment.SetEnvironmentVariable(EngineEnv.HfToken, canary);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var resultFile = Path.Combine(_cache.Path, "result.json");

        var exit = Lowbit.Engine.Cli.EngineCli.Run(["inspect", "--model", "lowbit/tiny-llama", "--result-file", resultFile], stdout, stderr, TimeProvider.System);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        Assert.Contains($"Bearer {canary}", hub.Authorizations);  // it was sent to the hub, where it belongs
        Assert.DoesNotContain(canary, stdout.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(canary, stderr.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain(canary, File.ReadAllText(resultFile), StringComparison.Ordinal);
        Assert.Contains("HF_TOKEN", File.ReadAllText(resultFile), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("meta-llama/Llama-2-7b-hf", SourceKind.HuggingFace)]
    [InlineData("https://models.example.com/llama", SourceKind.UrlPrefix)]
    public void Does_classify_model_sources(string model, SourceKind kind) => Assert.Equal(kind, ModelSource.KindOf(model));

    [Theory]
    [InlineData("not a model")]
    [InlineData("../etc/passwd")]
    [InlineData("a/b/c")]
    public void Does_reject_sources_that_are_neither_folder_url_nor_repo_id(string model)
    {
        var ex = Assert.Throws<EngineInputException>(() => ModelSource.KindOf(model));

        Assert.StartsWith("--model:", ex.Message, StringComparison.Ordinal);
    }
}
