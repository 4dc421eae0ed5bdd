using System.Globalization;
using System.Net;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

/// <summary>Client-side retry policy for API-server back-pressure.</summary>
public sealed record ClientRetryOptions
{
    /// <summary>Attempts in total, the first one included.</summary>
    public int MaxAttempts { get; init; } = 5;

    /// <summary>Wait before the second attempt when the server gives no Retry-After; doubles per attempt.</summary>
    public TimeSpan BaseDelay { get; init; } = TimeSpan.FromMilliseconds(200);

    public TimeSpan MaxDelay { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A Retry-After longer than this is not waited for: the response goes back to the caller (whose work queue backs off).</summary>
    public TimeSpan MaxRetryAfter { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// Retries 429 Too Many Requests and 5xx responses with bounded attempts, honouring <c>Retry-After</c> (never
/// earlier than the server asked; jitter only adds), with exponential backoff and jitter otherwise. The csharp
/// client has no retry handler of its own. POST is retried on 5xx only when the server sent Retry-After (a 5xx
/// after a create may have created it); 429 means the request was not processed, so every method is retried.
/// </summary>
public sealed class ClientRetryHandler : DelegatingHandler
{
    private readonly ClientRetryOptions _options;
    private readonly TimeProvider _time;
    private readonly RuntimeMetrics? _metrics;
    private readonly ILogger _logger;

    public ClientRetryHandler(ClientRetryOptions options, TimeProvider time, RuntimeMetrics? metrics, ILogger<ClientRetryHandler> logger)
    {
        _options = options ?? throw new ArgumentNullException(nameof(options));
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _metrics = metrics;
        _logger = logger ?? throw new ArgumentNullException(nameof(logger));
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        for (var attempt = 1; ; attempt++)
        {
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            if (attempt >= _options.MaxAttempts || !IsRetryable(request, response))
            {
                return response;
            }

            var retryAfter = RetryAfter(response);
            if (retryAfter > _options.MaxRetryAfter)
            {
                return response;
            }

            var delay = retryAfter is { } asked
                ? asked + Jitter(TimeSpan.FromMilliseconds(100))
                : Backoff(attempt);
            var code = (int)response.StatusCode;
            _metrics?.RestRetries.WithLabels(code.ToString(CultureInfo.InvariantCulture), request.Method.Method).Inc();
            ClientRetryLog.Retrying(_logger, request.Method.Method, request.RequestUri?.AbsolutePath, code, delay, attempt, _options.MaxAttempts);
            response.Dispose();
            await Task.Delay(delay, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>The server's Retry-After as a delay (seconds or an HTTP date), or null when absent.</summary>
    public TimeSpan? RetryAfter(HttpResponseMessage response)
    {
        ArgumentNullException.ThrowIfNull(response);
        var header = response.Headers.RetryAfter;
        if (header?.Delta is { } delta)
        {
            return delta;
        }

        if (header?.Date is { } date)
        {
            var wait = date - _time.GetUtcNow();
            return wait > TimeSpan.Zero ? wait : TimeSpan.Zero;
        }

        return null;
    }

    private static bool IsRetryable(HttpRequestMessage request, HttpResponseMessage response)
    {
        var code = response.StatusCode;
        if (code == HttpStatusCode.TooManyRequests)
        {
            return true;
        }

        var serverError = code is HttpStatusCode.InternalServerError or HttpStatusCode.BadGateway
            or HttpStatusCode.ServiceUnavailable or HttpStatusCode.GatewayTimeout;
        return serverError && (request.Method != HttpMethod.Post || response.Headers.RetryAfter is not null);
    }

    private TimeSpan Backoff(int attempt)
    {
        var exponential = _options.BaseDelay * Math.Pow(2, attempt - 1);
        var capped = exponential > _options.MaxDelay ? _options.MaxDelay : exponential;
        return capped + Jitter(capped * 0.2);
    }

    private static TimeSpan Jitter(TimeSpan upTo) => upTo * Random.Shared.NextDouble();
}

/// <summary>Counts every HTTP attempt as <c>rest_client_requests_total{code,method,host}</c>; sits inside the retry handler.</summary>
public sealed class RequestMetricsHandler(RuntimeMetrics metrics) : DelegatingHandler
{
    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        var host = request.RequestUri?.Authority ?? string.Empty;
        try
        {
            var response = await base.SendAsync(request, cancellationToken).ConfigureAwait(false);
            metrics.RestRequests.WithLabels(((int)response.StatusCode).ToString(CultureInfo.InvariantCulture), request.Method.Method, host).Inc();
            return response;
        }
        catch (HttpRequestException)
        {
            metrics.RestRequests.WithLabels("<error>", request.Method.Method, host).Inc();
            throw;
        }
    }
}

internal static partial class ClientRetryLog
{
    [LoggerMessage(EventId = 1300, Level = LogLevel.Warning, Message = "{Method} {Path} returned {Code}; retrying in {Delay} (attempt {Attempt} of {MaxAttempts})")]
    public static partial void Retrying(ILogger logger, string method, string? path, int code, TimeSpan delay, int attempt, int maxAttempts);
}
