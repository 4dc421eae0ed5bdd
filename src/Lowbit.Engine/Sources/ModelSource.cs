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

/// <summary>Bounds of one download: a deadline per request, a progress watchdog, and how often a download resumes.</summary>
public sealed record DownloadLimits
{
    /// <summary>One request (one attempt) may take this long in total, then it resumes from its partial file.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromMinutes(30);

    /// <summary>No byte for this long cancels the attempt (a half-open connection, a stuck CDN).</summary>
    public TimeSpan StallTimeout { get; init; } = TimeSpan.FromMinutes(2);

    /// <summary>Attempts per file before the download fails.</summary>
    public int Attempts { get; init; } = 5;
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
    private readonly DownloadLimits _limits;

    public ModelSource(HttpClient http, Action<EngineEvent> emit, TimeProvider time, DownloadLimits? limits = null)
    {
        _http = http;
        _emit = emit;
        _time = time;
        _limits = limits ?? new DownloadLimits();
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

    /// <summary>Downloads one file unless complete already; returns its path, or null when optional and absent (404).
    /// Each attempt has a total deadline and a progress watchdog; a timed-out or stalled attempt resumes from the
    /// <c>.part</c> file, up to <see cref="DownloadLimits.Attempts"/> times. The bearer token goes only to the Hugging
    /// Face endpoint, never to a URL-prefix source. A Hub file whose ETag is a SHA-256 (LFS) is checked against it.</summary>
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
        var hub = KindOf(model) == SourceKind.HuggingFace;
        var token = hub ? Environment.GetEnvironmentVariable(EngineEnv.HfToken) : null;
        for (var attempt = 1; ; attempt++)
        {
            using var deadline = new CancellationTokenSource(_limits.RequestTimeout, _time);
            using var watchdog = new CancellationTokenSource(_limits.StallTimeout, _time);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, deadline.Token, watchdog.Token);
            try
            {
                return await FetchOnceAsync(uri, hub, token, target, file, required, watchdog, linked.Token);
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
            {
                var why = deadline.IsCancellationRequested
                    ? $"did not finish within {_limits.RequestTimeout.TotalSeconds:0.###} s"
                    : $"sent no data for {_limits.StallTimeout.TotalSeconds:0.###} s";
                if (attempt >= _limits.Attempts)
                {
                    throw new IOException($"{uri}: the download {why} ({attempt} attempts); rerun to resume from the partial file");
                }
                _emit(new LogEvent { Level = "warning", Message = $"{file}: the download {why}; resuming (attempt {attempt + 1} of {_limits.Attempts})" });
            }
        }
    }

    private async Task<string?> FetchOnceAsync(Uri uri, bool hub, string? token, string target, string file, bool required, CancellationTokenSource watchdog, CancellationToken cancellationToken)
    {
        var part = target + ".part";
        var have = File.Exists(part) ? new FileInfo(part).Length : 0;
        using var request = new HttpRequestMessage(HttpMethod.Get, uri);
        if (token is { Length: > 0 })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        }
        if (have > 0)
        {
            request.Headers.Range = new RangeHeaderValue(have, null);
        }
        using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cancellationToken);
        watchdog.CancelAfter(_limits.StallTimeout);
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
                return await FetchOnceAsync(uri, hub, token, target, file, required, watchdog, cancellationToken);
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
        var sha256 = hub ? HubSha256(response) : null;
        var start = _time.GetTimestamp();
        var lastReport = start;
        await using (var output = new FileStream(part, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
        await using (var input = await response.Content.ReadAsStreamAsync(cancellationToken))
        {
            var buffer = new byte[1 << 20];
            int read;
            while ((read = await input.ReadAsync(buffer, cancellationToken)) > 0)
            {
                watchdog.CancelAfter(_limits.StallTimeout);
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
        if (sha256 is not null)
        {
            string actual;
            await using (var check = File.OpenRead(part))
            {
                actual = Convert.ToHexStringLower(await System.Security.Cryptography.SHA256.HashDataAsync(check, cancellationToken));
            }
            if (actual != sha256)
            {
                File.Delete(part);
                throw new IOException($"{uri}: SHA-256 {actual} does not match the Hub's {sha256}; the partial file was deleted, rerun to download again");
            }
        }
        File.Move(part, target, overwrite: true);
        Report(file, have, total ?? have, start);
        return target;
    }

    /// <summary>The SHA-256 the Hub announces for an LFS file (<c>X-Linked-Etag</c>, or an <c>ETag</c> of 64 hex digits); null otherwise.</summary>
    internal static string? HubSha256(HttpResponseMessage response)
    {
        IEnumerable<string> candidates = response.Headers.TryGetValues("X-Linked-Etag", out var linked) ? linked : [];
        if (response.Headers.ETag is { } etag)
        {
            candidates = candidates.Append(etag.Tag);
        }
        foreach (var raw in candidates)
        {
            var value = raw.Trim().TrimStart('W', '/').Trim('"').ToLowerInvariant();
            if (value.Length == 64 && value.All(char.IsAsciiHexDigitLower))
            {
                return value;
            }
        }
        return null;
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
