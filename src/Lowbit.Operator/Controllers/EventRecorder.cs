using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Globalization;
using k8s;
using k8s.Models;
using Lowbit.Api;
using Lowbit.Operator.Status;
using Microsoft.Extensions.Logging;

namespace Lowbit.Operator.Controllers;

/// <summary>
/// Records core/v1 Events on transitions (Warning for failures). Rate-limited: the same object, reason and message
/// is recorded at most once per <see cref="DedupWindow"/>, and at most <see cref="Burst"/> Events per object per window.
/// The suppression maps only hold entries younger than the window: a sweep on insert (at most once per
/// <see cref="SweepInterval"/>, or when a map passes <see cref="MaxTracked"/>) drops the expired ones, so a long-running
/// operator does not keep one entry per object and message it ever reported.
/// </summary>
public sealed partial class EventRecorder(IKubernetes client, TimeProvider time, ILogger<EventRecorder> logger)
{
    public const string Component = "lowbit-operator";
    public static readonly TimeSpan DedupWindow = TimeSpan.FromMinutes(10);
    public const int Burst = 25;
    public static readonly TimeSpan SweepInterval = TimeSpan.FromMinutes(1);

    // Keyed by a 128-bit digest of object UID + reason + message (and of the UID alone), not the strings: an entry
    // per object is 16 bytes of key instead of a ~300-byte string at 10,000 objects.
    private readonly ConcurrentDictionary<UInt128, DateTimeOffset> _recent = new();
    private readonly ConcurrentDictionary<UInt128, (DateTimeOffset Start, int Count)> _perObject = new();
    private readonly Lock _sweepLock = new();
    private DateTimeOffset _lastSweep = DateTimeOffset.MinValue;

    /// <summary>Bound on each suppression map; when one reaches it, a sweep keeps the newest half.</summary>
    public int MaxTracked { get; init; } = 50_000;

    /// <summary>Entries in the suppression maps (object+reason+message, object), for tests and diagnostics.</summary>
    internal (int Recent, int PerObject) Tracked => (_recent.Count, _perObject.Count);

    /// <summary>Records an Event when the Ready condition changed reason or status (Warning for failures).</summary>
    public Task RecordTransitionAsync(IKubernetesObject<V1ObjectMeta> obj, IReadOnlyList<V1Condition>? before, IReadOnlyList<V1Condition>? after, CancellationToken cancellationToken)
    {
        var old = Conditions.Find(before, Conditions.Types.Ready);
        var now = Conditions.Find(after, Conditions.Types.Ready);
        if (now is null || (old?.Status == now.Status && old?.Reason == now.Reason))
        {
            return Task.CompletedTask;
        }

        var stalled = Conditions.IsTrue(after, Conditions.Types.Stalled);
        var warning = stalled || now.Reason is Conditions.Reasons.Unschedulable or Conditions.Reasons.OOMKilled or StatusReasons.GpuOutOfMemory;
        return RecordAsync(obj, warning ? "Warning" : "Normal", now.Reason, string.IsNullOrEmpty(now.Message) ? now.Reason : now.Message, cancellationToken);
    }

    public async Task RecordAsync(IKubernetesObject<V1ObjectMeta> obj, string type, string reason, string message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(obj);
        var now = time.GetUtcNow();
        Sweep(now);
        var key = Digest($"{obj.Metadata.Uid}/{reason}/{message}");
        if (_recent.TryGetValue(key, out var last) && now - last < DedupWindow)
        {
            return;
        }

        var window = _perObject.AddOrUpdate(Digest(obj.Metadata.Uid ?? obj.Metadata.Name), _ => (now, 1),
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

    /// <summary>
    /// Drops suppression entries older than the window (they no longer suppress anything); when a map is still over
    /// <see cref="MaxTracked"/> afterwards (a burst of distinct objects within one window), the oldest go first.
    /// </summary>
    private void Sweep(DateTimeOffset now)
    {
        var full = _recent.Count >= MaxTracked || _perObject.Count >= MaxTracked;
        if (!full && now - _lastSweep < SweepInterval)
        {
            return;
        }

        lock (_sweepLock)
        {
            if (!full && now - _lastSweep < SweepInterval)
            {
                return;
            }

            _lastSweep = now;
            foreach (var (key, at) in _recent)
            {
                if (now - at >= DedupWindow)
                {
                    _recent.TryRemove(new KeyValuePair<UInt128, DateTimeOffset>(key, at));
                }
            }

            foreach (var (key, window) in _perObject)
            {
                if (now - window.Start > DedupWindow)
                {
                    _perObject.TryRemove(new KeyValuePair<UInt128, (DateTimeOffset, int)>(key, window));
                }
            }

            TrimOldest(_recent, at => at);
            TrimOldest(_perObject, window => window.Start);
        }
    }

    private static UInt128 Digest(string text)
    {
        Span<byte> hash = stackalloc byte[SHA256.HashSizeInBytes];
        SHA256.HashData(Encoding.UTF8.GetBytes(text), hash);
        return BinaryPrimitives.ReadUInt128LittleEndian(hash);
    }

    private void TrimOldest<TValue>(ConcurrentDictionary<UInt128, TValue> map, Func<TValue, DateTimeOffset> at)
    {
        var excess = map.Count - (MaxTracked / 2);
        if (map.Count < MaxTracked || excess <= 0)
        {
            return;
        }

        foreach (var (key, _) in map.OrderBy(e => at(e.Value)).Take(excess).ToList())
        {
            map.TryRemove(key, out _);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Could not record Event {Reason} on {Name}: {Error}")]
    private static partial void EventFailed(ILogger logger, string reason, string name, string error);
}
