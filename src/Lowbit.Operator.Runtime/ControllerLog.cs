using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Runtime;

internal static partial class ControllerLog
{
    [LoggerMessage(EventId = 1200, Level = LogLevel.Information, Message = "Starting controller {Controller} with {Workers} workers")]
    public static partial void Starting(ILogger logger, string controller, int workers);

    [LoggerMessage(EventId = 1201, Level = LogLevel.Information, Message = "Controller {Controller} stopped")]
    public static partial void Stopped(ILogger logger, string controller);

    [LoggerMessage(EventId = 1202, Level = LogLevel.Debug, Message = "{Controller} {Key}: conflict (stale cache); requeueing")]
    public static partial void Conflict(ILogger logger, string controller, string key);

    [LoggerMessage(EventId = 1203, Level = LogLevel.Warning, Message = "{Controller} {Key}: reconcile exceeded {Timeout}")]
    public static partial void TimedOut(ILogger logger, string controller, string key, TimeSpan timeout, Exception exception);

    [LoggerMessage(EventId = 1204, Level = LogLevel.Warning, Message = "{Controller} {Key}: API call failed; retrying with backoff")]
    public static partial void ApiError(ILogger logger, string controller, string key, Exception exception);

    [LoggerMessage(EventId = 1205, Level = LogLevel.Error, Message = "{Controller} {Key}: reconcile threw; retrying with backoff")]
    public static partial void Panic(ILogger logger, string controller, string key, Exception exception);

    [LoggerMessage(EventId = 1206, Level = LogLevel.Warning, Message = "{Controller} {Key}: reconcile failed ({Reason}): {Message}")]
    public static partial void Failed(ILogger logger, string controller, string key, string reason, string message);

    [LoggerMessage(EventId = 1207, Level = LogLevel.Warning, Message = "{Controller} {Key}: terminal error ({Reason}): {Message}; not retried until generation changes from {Generation}")]
    public static partial void Terminal(ILogger logger, string controller, string key, string reason, string message, long? generation);

    [LoggerMessage(EventId = 1208, Level = LogLevel.Debug, Message = "{Controller} {Key}: skipped, terminal error at generation {Generation}")]
    public static partial void SkippedTerminal(ILogger logger, string controller, string key, long? generation);

    [LoggerMessage(EventId = 1209, Level = LogLevel.Debug, Message = "{Controller} {Key}: reconcile cancelled by shutdown")]
    public static partial void Cancelled(ILogger logger, string controller, string key);

    [LoggerMessage(EventId = 1210, Level = LogLevel.Error, Message = "{Controller} {Key}: worker fault")]
    public static partial void WorkerFault(ILogger logger, string controller, string key, Exception exception);

    [LoggerMessage(EventId = 1211, Level = LogLevel.Information, Message = "{Controller} {Key}: the API server no longer has it (stale cache); not reconciled until the cache catches up")]
    public static partial void Gone(ILogger logger, string controller, string key);

    [LoggerMessage(EventId = 1212, Level = LogLevel.Debug, Message = "{Controller} {Key}: skipped, already found gone at the server")]
    public static partial void SkippedGone(ILogger logger, string controller, string key);
}
