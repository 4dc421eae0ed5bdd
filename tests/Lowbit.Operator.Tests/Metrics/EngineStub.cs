using System.Globalization;
using System.Text;
using Lowbit.Engine.Protocol;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Tests.Metrics;

/// <summary>
/// A serving pod's HTTP server (Kestrel on 127.0.0.1): <c>GET /metrics</c> renders what <c>lowbit-engine serve</c>
/// must emit per <see cref="EngineMetricNames"/>, from counters the test sets; it can also answer 500 or garbage.
/// </summary>
internal sealed class EngineStub : IAsyncDisposable
{
    private readonly Lock _lock = new();
    private readonly WebApplication _app;
    private double _tokens;
    private double _ttftSum;
    private double _ttftCount;
    private StubAnswer _answer = StubAnswer.Metrics;
    private string? _page;
    private int _scrapes;

    private EngineStub(WebApplication app) => _app = app;

    public enum StubAnswer
    {
        Metrics,
        ServerError,
        Garbage,
    }

    public int Port => new Uri(_app.Urls.First()).Port;

    /// <summary>Requests answered on /metrics so far.</summary>
    public int Scrapes => Volatile.Read(ref _scrapes);

    public static async Task<EngineStub> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        var stub = new EngineStub(app);
        app.MapGet("/metrics", stub.Answer);
        await app.StartAsync();
        return stub;
    }

    /// <summary>Sets the counters (as a process would after generating tokens and answering requests).</summary>
    public void Set(double generationTokens, double ttftSum, double ttftCount)
    {
        lock (_lock)
        {
            (_tokens, _ttftSum, _ttftCount) = (generationTokens, ttftSum, ttftCount);
        }
    }

    /// <summary>Adds to the counters.</summary>
    public void Advance(double generationTokens, double ttftSeconds, double requests)
    {
        lock (_lock)
        {
            (_tokens, _ttftSum, _ttftCount) = (_tokens + generationTokens, _ttftSum + ttftSeconds, _ttftCount + requests);
        }
    }

    /// <summary>Serves this text instead of the lowbit page (another runtime's page).</summary>
    public void Serve(string page)
    {
        lock (_lock)
        {
            _page = page;
        }
    }

    public void AnswerWith(StubAnswer answer)
    {
        lock (_lock)
        {
            _answer = answer;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    private IResult Answer()
    {
        Interlocked.Increment(ref _scrapes);
        lock (_lock)
        {
            return _answer switch
            {
                StubAnswer.ServerError => Results.StatusCode(500),
                StubAnswer.Garbage => Results.Text("<html><body>upstream connect error</body></html>", "text/html"),
                _ => Results.Text(_page ?? Render(_tokens, _ttftSum, _ttftCount), "text/plain; version=0.0.4; charset=utf-8"),
            };
        }
    }

    /// <summary>The page the serve verb emits (every family of <see cref="EngineMetricNames.All"/>, label model_name).</summary>
    public static string Render(double tokens, double ttftSum, double ttftCount)
    {
        var page = new StringBuilder();
        const string Model = "{" + EngineMetricNames.ModelNameLabel + "=\"chat\"}";
        void Family(string name, string type, string help, double value)
        {
            page.Append(CultureInfo.InvariantCulture, $"# HELP {name} {help}\n# TYPE {name} {type}\n{name}{Model} {value.ToString("R", CultureInfo.InvariantCulture)}\n");
        }

        Family(EngineMetricNames.NumRequestsRunning, "gauge", "Requests being decoded.", 1);
        Family(EngineMetricNames.NumRequestsWaiting, "gauge", "Requests queued.", 0);
        Family(EngineMetricNames.KvCacheUsagePerc, "gauge", "KV cache usage, 1 means 100 percent.", 0.25);
        Family(EngineMetricNames.PromptTokensTotal, "counter", "Prefill tokens processed.", tokens / 4);
        Family(EngineMetricNames.GenerationTokensTotal, "counter", "Generation tokens produced.", tokens);
        Histogram(page, EngineMetricNames.TimeToFirstTokenSeconds, EngineMetricNames.TimeToFirstTokenBuckets, ttftSum, ttftCount);
        Histogram(page, EngineMetricNames.E2eRequestLatencySeconds, EngineMetricNames.E2eRequestLatencyBuckets, ttftSum * 10, ttftCount);
        return page.ToString();
    }

    /// <summary>A histogram whose observations all fall in the bucket of their mean (cumulative counts).</summary>
    private static void Histogram(StringBuilder page, string name, IReadOnlyList<double> buckets, double sum, double count)
    {
        var mean = count > 0 ? sum / count : 0;
        page.Append(CultureInfo.InvariantCulture, $"# HELP {name} Histogram in seconds.\n# TYPE {name} histogram\n");
        foreach (var le in buckets)
        {
            var cumulative = le >= mean ? count : 0;
            page.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"{le.ToString("R", CultureInfo.InvariantCulture)}\",model_name=\"chat\"}} {cumulative}\n");
        }

        page.Append(CultureInfo.InvariantCulture, $"{name}_bucket{{le=\"+Inf\",model_name=\"chat\"}} {count}\n");
        page.Append(CultureInfo.InvariantCulture, $"{name}_count{{model_name=\"chat\"}} {count}\n");
        page.Append(CultureInfo.InvariantCulture, $"{name}_sum{{model_name=\"chat\"}} {sum.ToString("R", CultureInfo.InvariantCulture)}\n");
    }
}
