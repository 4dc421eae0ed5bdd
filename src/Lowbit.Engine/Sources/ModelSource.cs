using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Sources;

/// <summary>Where a model comes from.</summary>
public enum SourceKind
{
    LocalFolder,
    UrlPrefix,
    HuggingFace,
}

/// <summary>
/// Resolves <c>--model</c> to a local folder: a local folder as is; an HTTP(S) URL prefix (<c>{prefix}/{file}</c>) or a
/// Hugging Face repo id (<c>{endpoint}/{repo}/resolve/{revision}/{file}</c>, bearer token from <c>HF_TOKEN</c>) by
/// downloading config, index, shards and tokenizer files into the cache (<c>LOWBIT_CACHE_DIR</c>). Downloads resume
/// with <c>Range</c> from a <c>.part</c> file, are checked against the server's size, and report progress events.
/// </summary>
public sealed partial class ModelSource
{
    private static readonly string[] OptionalFiles =
        ["tokenizer.json", "tokenizer.model", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

    private readonly HttpClient _http;
    private readonly Action<EngineEvent> _emit;
    private readonly TimeProvider _time;

    public ModelSource(HttpClient http, Action<EngineEvent> emit, TimeProvider time)
    {
        _http = http;
        _emit = emit;
        _time = time;
    }

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")]
    private static partial Regex RepoId();

    public static SourceKind KindOf(string model) =>
        Directory.Exists(model) ? SourceKind.LocalFolder
        : model.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || model.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? SourceKind.UrlPrefix
        : RepoId().IsMatch(model) && !model.Contains("..", StringComparison.Ordinal) ? SourceKind.HuggingFace
        : throw new EngineInputException($"--model: '{model}' is not an existing folder, an http(s):// URL prefix, or a Hugging Face repo id (org/name)");

    /// <summary>The URL of <paramref name="file"/> in a remote source.</summary>
    public static Uri FileUri(string model, string? revision, string file)
    {
        var endpoint = (Environment.GetEnvironmentVariable(EngineEnv.HfEndpoint) is { Length: > 0 } e ? e : EngineEnv.DefaultHfEndpoint).TrimEnd('/');
        return KindOf(model) switch
        {
            SourceKind.UrlPrefix => new Uri($"{model.TrimEnd('/')}/{file}"),
            SourceKind.HuggingFace => new Uri($"{endpoint}/{model}/resolve/{Uri.EscapeDataString(revision ?? "main")}/{file}"),
            _ => throw new ArgumentException("not a remote source", nameof(model)),
        };
    }

    /// <summary>Resolves to a local folder holding the model; <paramref name="weights"/> false fetches only config and index (for inspect).</summary>
    public async Task<string> ResolveAsync(string model, string? revision, bool weights, CancellationToken cancellationToken = default)
    {
        if (KindOf(model) == SourceKind.LocalFolder)
        {
            return model;
        }
        var directory = CacheDirectory(model, revision);
        Directory.CreateDirectory(directory);
        await FetchAsync(model, revision, directory, "config.json", required: true, cancellationToken);
        var index = await FetchAsync(model, revision, directory, "model.safetensors.index.json", required: false, cancellationToken);
        if (weights)
        {
            var shards = index is null ? ["model.safetensors"] : ShardsOf(index);
            foreach (var shard in shards)
            {
                await FetchAsync(model, revision, directory, shard, required: true, cancellationToken);
            }
            foreach (var file in OptionalFiles)
            {
                await FetchAsync(model, revision, directory, file, required: false, cancellationToken);
            }
        }
        return directory;
    }

    public string Resolve(string model, string? revision, bool weights) =>
        ResolveAsync(model, revision, weights).GetAwaiter().GetResult();

    private static IReadOnlyList<string> ShardsOf(string indexPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(indexPath));
        return doc.RootElement.GetProperty("weight_map").EnumerateObject().Select(p => p.Value.GetString()!).Distinct().Order(StringComparer.Ordinal).ToList();
    }

    private static string CacheDirectory(string model, string? revision)
    {
        var root = Environment.GetEnvironmentVariable(EngineEnv.CacheDir) is { Length: > 0 } dir
            ? dir
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache", "lowbit");
        var key = Regex.Replace($"{model}@{revision ?? "main"}", "[^A-Za-z0-9._@-]+", "--");
        return Path.Combine(root, key);
    }

    /// <summary>Downloads one file unless complete already; returns its path, or null when optional and absent (404).</summary>
    public async Task<string?> FetchAsync(string model, string? revision, string directory, string file, bool required, CancellationToken cancellationToken)
    {
        if (file.Contains('/', StringComparison.Ordinal) || file.Contains("..", StringComparison.Ordinal))
        {
            throw new EngineInputException($"--model: refusing file name '{file}'");
        }
        var target = Path.Combine(directory, file);
        if (File.Exists(target))
        {
            return target;
        }
        var uri = FileUri(model, revision, file);
        var part = target + ".part";
        var have = File.Exists(part) ? new FileInfo(part).Length : 0;
        using var request = new HttpRequestMessage(HttpMethod.Get, uri);
        if (Environment.GetEnvironmentVariable(EngineEnv.HfToken) is { Length: > 0 } token)
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        if (have > 0)
        {
            request.Headers.Range = new RangeHeaderValue(have, null);
        }
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        switch (response.StatusCode)
        {
            case HttpStatusCode.NotFound when !required:
                return null;
            case HttpStatusCode.NotFound:
                throw new EngineInputException($"--model: {uri} not found (404); check the repo id, --revision and file names");
            case HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden:
                throw new EngineInputException($"--model: {uri} answered {(int)response.StatusCode}; set {EngineEnv.HfToken} to a token with access to the repository");
            case HttpStatusCode.RequestedRangeNotSatisfiable:
                File.Delete(part);
                return await FetchAsync(model, revision, directory, file, required, cancellationToken);
        }
        if (!response.IsSuccessStatusCode)
        {
            throw new HttpRequestException($"{uri} answered {(int)response.StatusCode} {response.ReasonPhrase}", null, response.StatusCode);
        }
        var resumed = response.StatusCode == HttpStatusCode.PartialContent;
        if (!resumed)
        {
            have = 0;
        }
        long? total = resumed ? response.Content.Headers.ContentRange?.Length : response.Content.Headers.ContentLength;
        var start = _time.GetTimestamp();
        var lastReport = start;
        await using (var output = new FileStream(part, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
        await using (var input = await response.Content.ReadAsStreamAsync(cancellationToken))
        {
            var buffer = new byte[1 << 20];
            int read;
            while ((read = await input.ReadAsync(buffer, cancellationToken)) > 0)
            {
                await output.WriteAsync(buffer.AsMemory(0, read), cancellationToken);
                have += read;
                if (_time.GetElapsedTime(lastReport).TotalSeconds >= 1)
                {
                    lastReport = _time.GetTimestamp();
                    Report(file, have, total ?? have, start);
                }
            }
        }
        if (total is { } expected && have != expected)
        {
            throw new IOException($"{uri}: received {have} bytes, the server announced {expected}; rerun to resume");
        }
        File.Move(part, target, overwrite: true);
        Report(file, have, total ?? have, start);
        return target;
    }

    private void Report(string file, long bytes, long total, long start) =>
        _emit(new DownloadEvent { File = file, Bytes = bytes, TotalBytes = total, ElapsedSeconds = Math.Round(_time.GetElapsedTime(start).TotalSeconds, 3) });

    /// <summary>A shared client: redirects followed (the hub redirects LFS files to a CDN; the bearer token is not forwarded).</summary>
    public static HttpClient CreateHttpClient() => new(new SocketsHttpHandler { AllowAutoRedirect = true, MaxAutomaticRedirections = 10 })
    {
        Timeout = Timeout.InfiniteTimeSpan,
    };

    internal static string Describe(string model, string? revision) => KindOf(model) switch
    {
        SourceKind.HuggingFace => $"hf://{model}@{revision ?? "main"}",
        _ => model,
    };
}
