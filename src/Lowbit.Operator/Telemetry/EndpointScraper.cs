using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using Lowbit.Engine.Protocol;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Telemetry;

/// <summary>
/// Scrapes the serving pods of every InferenceEndpoint in the operator's cache, every
/// <see cref="EndpointScrapeOptions.Interval"/>, while this instance leads: <c>GET http://&lt;podIP&gt;:&lt;port "http"&gt;/metrics</c>
/// on each Running and Ready pod carrying the endpoint's child labels (bounded concurrency, short timeout).
/// From the counters' growth between two scrapes of the same pod it sets, per endpoint,
/// <c>lowbit_endpoint_tokens_per_second</c> (summed over pods), <c>lowbit_endpoint_time_to_first_token_seconds</c>
/// (histogram sum growth / count growth; absent without requests or on llama.cpp) and
/// <c>lowbit_endpoint_usd_per_million_tokens</c> (hourly cost / tokens per hour; absent at 0 tokens/s).
/// Each failed pod scrape counts in <c>lowbit_endpoint_scrape_errors_total</c>; an endpoint none of whose pods
/// answered has no observed gauges (never a stale value). It also sweeps the cost series of endpoints deleted
/// from the cache. Nothing escapes a round: errors are counted and logged.
/// </summary>
public sealed class EndpointScraper : BackgroundService
{
    /// <summary>DI key of an optional <see cref="TimeProvider"/> for the scrape interval and sample times only (tests).</summary>
    public const string ClockKey = "lowbit.endpoint-scraper.clock";

    private readonly IObjectCache _cache;
    private readonly CostMetrics _cost;
    private readonly OperatorState _state;
    private readonly EndpointScrapeOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly HttpClient _http;

    // Touched only by the scrape loop (one round at a time).
    private readonly Dictionary<string, PodSample> _lastSample = new(StringComparer.Ordinal);
    private readonly HashSet<ObjectKey> _labelled = [];
    private long _rounds;

    public EndpointScraper(IObjectCache cache, CostMetrics cost, OperatorState state, IOptions<EndpointScrapeOptions> options, TimeProvider time, ILogger<EndpointScraper> logger)
    {
        _cache = cache ?? throw new ArgumentNullException(nameof(cache));
        _cost = cost ?? throw new ArgumentNullException(nameof(cost));
        _state = state ?? throw new ArgumentNullException(nameof(state));
        _options = options?.Value ?? throw new ArgumentNullException(nameof(options));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
        _http = new HttpClient(new SocketsHttpHandler
        {
            ConnectTimeout = _options.Timeout,
            AllowAutoRedirect = false,
            // Pod IPs are reached directly: an HTTP(S)_PROXY meant for the internet must not catch them.
            UseProxy = false,
            AutomaticDecompression = DecompressionMethods.All,
            PooledConnectionIdleTimeout = _options.Interval * 2,
        })
        {
            Timeout = System.Threading.Timeout.InfiniteTimeSpan,
        };
    }

    /// <summary>Scrape rounds finished since start (the tests wait on it).</summary>
    public long CompletedRounds => Interlocked.Read(ref _rounds);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (!_options.Enabled)
        {
            return;
        }

        using var timer = new PeriodicTimer(_options.Interval, _time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false))
            {
                try
                {
                    await ScrapeOnceAsync(stoppingToken).ConfigureAwait(false);
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    ScrapeLog.RoundFailed(_logger, ex);
                }

                Interlocked.Increment(ref _rounds);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Host shutdown.
        }
    }

    public override void Dispose()
    {
        _http.Dispose();
        base.Dispose();
    }

    /// <summary>One round: scrape every serving pod, publish each endpoint's rates, drop the series of what is gone.</summary>
    internal async Task ScrapeOnceAsync(CancellationToken cancellationToken)
    {
        if (!_state.Leading)
        {
            // Followers publish nothing: the leader's numbers are the endpoint's.
            ForgetAllObserved();
            return;
        }

        // Only endpoints with serving pods are read whole: at 10,000 endpoints, decoding every cached one each round
        // would materialize the whole cache every interval.
        var targets = Targets(_cache, _cache.List<V1Pod>());
        var results = new ScrapeResult[targets.Count];
        await Parallel.ForEachAsync(
            Enumerable.Range(0, targets.Count),
            new ParallelOptions { MaxDegreeOfParallelism = _options.MaxConcurrency, CancellationToken = cancellationToken },
            async (i, token) => results[i] = await ScrapeAsync(targets[i], token).ConfigureAwait(false)).ConfigureAwait(false);

        Publish(targets, results);
        Sweep(_cache.Keys<InferenceEndpoint>());
    }

    /// <summary>The serving pods of each endpoint: Running, Ready, with an IP, not terminating, labelled as its inference child.</summary>
    private static List<ScrapeTarget> Targets(IObjectCache cache, IReadOnlyList<V1Pod> pods)
    {
        var ownerKey = Labels.OwnerKey(InferenceEndpoint.KindName);
        var serving = pods
            .Where(p => ChildMeta.Label(p, Labels.Component) == InferenceDeploymentBuilder.Role && IsServing(p) && ChildMeta.Label(p, ownerKey) is not null)
            .GroupBy(p => new ObjectKey(string.IsNullOrEmpty(p.Metadata.NamespaceProperty) ? null : p.Metadata.NamespaceProperty, ChildMeta.Label(p, ownerKey)!));
        var targets = new List<ScrapeTarget>();
        foreach (var group in serving)
        {
            if (!cache.TryGet<InferenceEndpoint>(group.Key, out var endpoint))
            {
                continue;
            }

            var dialect = EngineMetricDialect.For(endpoint.Spec?.Runtime ?? ServingRuntime.Lowbit);
            foreach (var pod in group)
            {
                var id = pod.Metadata.Uid ?? $"{pod.Metadata.NamespaceProperty}/{pod.Metadata.Name}";
                targets.Add(new ScrapeTarget(ObjectKey.Of(endpoint), dialect, id, MetricsUrl(pod)));
            }
        }

        return targets;
    }

    /// <summary>Ready and not terminating; of a LeaderWorkerSet group only the leader (worker index 0) serves HTTP.</summary>
    private static bool IsServing(V1Pod pod) =>
        pod.Metadata.DeletionTimestamp is null
        && ChildMeta.Label(pod, LeaderWorkerSets.LeaderWorkerSet.WorkerIndexLabel) is null or "0"
        && pod.Status is { Phase: "Running", PodIP.Length: > 0 } status
        && status.Conditions?.Any(c => c.Type == "Ready" && c.Status == "True") == true;

    /// <summary><c>http://&lt;podIP&gt;:&lt;container port named http, else the serve port&gt;/metrics</c>.</summary>
    internal static Uri MetricsUrl(V1Pod pod)
    {
        var port = pod.Spec?.Containers?
            .SelectMany(c => c.Ports ?? [])
            .FirstOrDefault(p => p.Name == InferenceDeploymentBuilder.PortName)?.ContainerPort ?? InferenceDeploymentBuilder.Port;
        var ip = pod.Status.PodIP;
        var host = IPAddress.TryParse(ip, out var address) && address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip;
        return new Uri($"http://{host}:{port}/metrics");
    }

    private async Task<ScrapeResult> ScrapeAsync(ScrapeTarget target, CancellationToken cancellationToken)
    {
        // The network timeout runs on the real clock, as HttpClient's own would; the injected clock paces rounds.
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.Timeout);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, target.Url);
            request.Headers.Accept.ParseAdd("text/plain; version=0.0.4");
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode)
            {
                return ScrapeResult.Failed($"HTTP {(int)response.StatusCode} {response.ReasonPhrase}");
            }

            var text = await ReadBoundedAsync(response.Content, _options.MaxResponseBytes, timeout.Token).ConfigureAwait(false);
            if (text is null)
            {
                return ScrapeResult.Failed($"body larger than {_options.MaxResponseBytes} bytes");
            }

            var reading = target.Dialect.Read(PrometheusText.Parse(text, target.Dialect.Wants), out var error);
            return reading is null ? ScrapeResult.Failed(error!) : new ScrapeResult(new PodSample(_time.GetUtcNow(), reading), null);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return ScrapeResult.Failed($"no answer within {_options.Timeout}");
        }
        catch (Exception ex) when (ex is HttpRequestException or IOException or InvalidOperationException)
        {
            return ScrapeResult.Failed(ex.Message);
        }
    }

    /// <summary>The body as UTF-8 text, or null when it exceeds <paramref name="maxBytes"/>.</summary>
    private static async Task<string?> ReadBoundedAsync(HttpContent content, int maxBytes, CancellationToken cancellationToken)
    {
        if (content.Headers.ContentLength > maxBytes)
        {
            return null;
        }

        var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
        await using (stream.ConfigureAwait(false))
        {
            using var body = new MemoryStream();
            var chunk = ArrayPool<byte>.Shared.Rent(64 * 1024);
            try
            {
                int read;
                while ((read = await stream.ReadAsync(chunk, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    if (body.Length + read > maxBytes)
                    {
                        return null;
                    }

                    body.Write(chunk, 0, read);
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(chunk);
            }

            return Encoding.UTF8.GetString(body.GetBuffer(), 0, (int)body.Length);
        }
    }

    /// <summary>Per endpoint: count failures, rate the pods that answered against their previous sample, set or drop the gauges.</summary>
    private void Publish(List<ScrapeTarget> targets, ScrapeResult[] results)
    {
        var live = new HashSet<string>(StringComparer.Ordinal);
        var scrapedEndpoints = new HashSet<ObjectKey>();
        foreach (var endpoint in targets.Select((target, i) => (Target: target, Result: results[i])).GroupBy(x => x.Target.Endpoint))
        {
            var (ns, name) = (endpoint.Key.Namespace ?? "", endpoint.Key.Name);
            var errors = _cost.EndpointScrapeErrors.WithLabels(ns, name);
            _labelled.Add(endpoint.Key);
            scrapedEndpoints.Add(endpoint.Key);
            var intervals = new List<(PodSample Previous, PodSample Current)>();
            var answered = 0;
            foreach (var (target, result) in endpoint)
            {
                // A pod that failed keeps its last sample: its next answer is rated over the longer interval.
                live.Add(target.PodId);
                if (result.Sample is not { } sample)
                {
                    errors.Inc();
                    ScrapeLog.ScrapeFailed(_logger, target.Url, ns, name, result.Error ?? "unknown");
                    continue;
                }

                answered++;
                if (_lastSample.TryGetValue(target.PodId, out var previous))
                {
                    intervals.Add((previous, sample));
                }

                _lastSample[target.PodId] = sample;
            }

            SetObserved(ns, name, answered > 0 ? EngineRates.Compute(intervals) : null);
        }

        foreach (var key in _labelled.Where(k => !scrapedEndpoints.Contains(k)))
        {
            // No serving pod this round: no observed rate.
            _cost.ForgetObserved(key.Namespace ?? "", key.Name);
        }

        foreach (var gone in _lastSample.Keys.Where(id => !live.Contains(id)).ToList())
        {
            _lastSample.Remove(gone);
        }
    }

    private void SetObserved(string ns, string name, EndpointRates? rates)
    {
        if (rates is null)
        {
            _cost.ForgetObserved(ns, name);
            return;
        }

        _cost.EndpointTokensPerSecond.WithLabels(ns, name).Set(rates.TokensPerSecond);
        if (rates.TimeToFirstTokenSeconds is { } ttft)
        {
            _cost.EndpointTimeToFirstToken.WithLabels(ns, name).Set(ttft);
        }
        else
        {
            _cost.EndpointTimeToFirstToken.RemoveLabelled(ns, name);
        }

        if (rates.UsdPerMillionTokens(_cost.EndpointHourlyUsd(ns, name)) is { } usd)
        {
            _cost.EndpointUsdPerMillionTokens.WithLabels(ns, name).Set(usd);
        }
        else
        {
            _cost.EndpointUsdPerMillionTokens.RemoveLabelled(ns, name);
        }
    }

    /// <summary>Endpoints gone from the cache lose every series (cost, plan, observed, errors): deletion leaves nothing behind.</summary>
    private void Sweep(IReadOnlyList<ObjectKey> endpoints)
    {
        var present = endpoints.ToHashSet();
        var known = _cost.Endpoints.Select(e => new ObjectKey(string.IsNullOrEmpty(e.Ns) ? null : e.Ns, e.Name)).Concat(_labelled);
        foreach (var gone in known.Where(k => !present.Contains(k)).Distinct().ToList())
        {
            _cost.Forget(InferenceEndpoint.KindName, gone.Namespace ?? "", gone.Name);
            _labelled.Remove(gone);
        }
    }

    private void ForgetAllObserved()
    {
        foreach (var key in _labelled)
        {
            _cost.ForgetObserved(key.Namespace ?? "", key.Name);
        }

        _lastSample.Clear();
    }

    private sealed record ScrapeTarget(ObjectKey Endpoint, EngineMetricDialect Dialect, string PodId, Uri Url);

    private sealed record ScrapeResult(PodSample? Sample, string? Error)
    {
        public static ScrapeResult Failed(string error) => new(null, error);
    }
}

internal static partial class ScrapeLog
{
    [LoggerMessage(EventId = 1500, Level = LogLevel.Debug, Message = "Scrape of {Url} for InferenceEndpoint {Namespace}/{Endpoint} failed: {Reason}")]
    public static partial void ScrapeFailed(ILogger logger, Uri url, string @namespace, string endpoint, string reason);

    [LoggerMessage(EventId = 1501, Level = LogLevel.Warning, Message = "Endpoint metrics scrape round failed; the next round retries")]
    public static partial void RoundFailed(ILogger logger, Exception exception);
}
