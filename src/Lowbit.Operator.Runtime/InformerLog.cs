using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

internal static partial class InformerLog
{
    [LoggerMessage(EventId = 1100, Level = LogLevel.Information, Message = "Listed {Kind} ({Reason}): {Count} objects, {Deleted} vanished, resourceVersion {ResourceVersion}")]
    public static partial void Listed(ILogger logger, string kind, string reason, int count, int deleted, string? resourceVersion);

    [LoggerMessage(EventId = 1101, Level = LogLevel.Debug, Message = "Watch of {Kind} ended ({Reason}); resuming from resourceVersion {ResourceVersion}")]
    public static partial void WatchEnded(ILogger logger, string kind, string reason, string? resourceVersion);

    [LoggerMessage(EventId = 1102, Level = LogLevel.Warning, Message = "Watch of {Kind} was silent for {IdleTimeout}; reconnecting")]
    public static partial void WatchIdle(ILogger logger, string kind, TimeSpan idleTimeout);

    [LoggerMessage(EventId = 1103, Level = LogLevel.Warning, Message = "Watch of {Kind} got an ERROR event: code {Code}, reason {Reason}: {Message}")]
    public static partial void WatchError(ILogger logger, string kind, int? code, string? reason, string? message);

    [LoggerMessage(EventId = 1104, Level = LogLevel.Warning, Message = "A watch event of {Kind} could not be decoded; relisting")]
    public static partial void DecodeFailed(ILogger logger, string kind, Exception exception);

    [LoggerMessage(EventId = 1105, Level = LogLevel.Warning, Message = "List/watch of {Kind} failed; retrying in {Backoff}")]
    public static partial void ListWatchFailed(ILogger logger, string kind, TimeSpan backoff, Exception exception);

    [LoggerMessage(EventId = 1107, Level = LogLevel.Information, Message = "Watch of {Kind} broke off; resuming")]
    public static partial void WatchBroken(ILogger logger, string kind, Exception exception);

    [LoggerMessage(EventId = 1108, Level = LogLevel.Information, Message = "{Kind} ({ApiVersion}) is not served by the API server (its CustomResourceDefinition is not installed); its cache stays empty and the list is retried every {Retry}")]
    public static partial void NotServed(ILogger logger, string kind, string apiVersion, TimeSpan retry);

    [LoggerMessage(EventId = 1106, Level = LogLevel.Error, Message = "An event handler of {Kind} threw")]
    public static partial void HandlerFailed(ILogger logger, string kind, Exception exception);
}
