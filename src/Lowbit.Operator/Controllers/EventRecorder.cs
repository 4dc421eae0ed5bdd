using System.Collections.Concurrent;
using System.Globalization;
using k8s;
using k8s.Models;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// Records core/v1 Events on transitions (Warning for failures). Rate-limited: the same object, reason and message
/// is recorded at most once per <see cref="DedupWindow"/>, and at most <see cref="Burst"/> Events per object per window.
/// </summary>
public sealed partial class EventRecorder(IKubernetes client, TimeProvider time, ILogger<EventRecorder> logger)
{
    public const string Component = "lowbit-operator";
    public static readonly TimeSpan DedupWindow = TimeSpan.FromMinutes(10);
    public const int Burst = 25;

    private readonly ConcurrentDictionary<string, DateTimeOffset> _recent = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, (DateTimeOffset Start, int Count)> _perObject = new(StringComparer.Ordinal);

    public async Task RecordAsync(IKubernetesObject<V1ObjectMeta> obj, string type, string reason, string message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var now = time.GetUtcNow();
        var key = $"{obj.Metadata.Uid}/{reason}/{message}";
        if (_recent.TryGetValue(key, out var last) && now - last < DedupWindow)
        {
            return;
        }

        var window = _perObject.AddOrUpdate(obj.Metadata.Uid ?? obj.Metadata.Name, _ => (now, 1),
            (_, w) => now - w.Start > DedupWindow ? (now, 1) : (w.Start, w.Count + 1));
        if (window.Count > Burst)
        {
            return;
        }

        _recent[key] = now;
        var ev = new Corev1Event
        {
            Metadata = new V1ObjectMeta
            {
                Name = string.Create(CultureInfo.InvariantCulture, $"{obj.Metadata.Name}.{now.ToUnixTimeMilliseconds():x}{Random.Shared.Next(0x1000):x3}"),
                NamespaceProperty = obj.Metadata.NamespaceProperty,
            },
            InvolvedObject = new V1ObjectReference
            {
                ApiVersion = obj.ApiVersion,
                Kind = obj.Kind,
                Name = obj.Metadata.Name,
                NamespaceProperty = obj.Metadata.NamespaceProperty,
                Uid = obj.Metadata.Uid,
                ResourceVersion = obj.Metadata.ResourceVersion,
            },
            Type = type,
            Reason = reason,
            Message = message.Length <= 1024 ? message : message[..1024],
            Source = new V1EventSource { Component = Component },
            ReportingComponent = Component,
            ReportingInstance = Environment.MachineName,
            FirstTimestamp = now.UtcDateTime,
            LastTimestamp = now.UtcDateTime,
            Count = 1,
        };
        try
        {
            await client.CoreV1.CreateNamespacedEventAsync(ev, obj.Metadata.NamespaceProperty, cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (k8s.Autorest.HttpOperationException ex)
        {
            // Events are best effort: a failure to record one never fails a reconcile.
            EventFailed(logger, reason, obj.Metadata.Name, ex.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not record Event {Reason} on {Name}: {Error}")]
    private static partial void EventFailed(ILogger logger, string reason, string name, string error);
}
