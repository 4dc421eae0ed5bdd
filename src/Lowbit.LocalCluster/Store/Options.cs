namespace Lowbit.LocalCluster.Store;

/// <summary>Options of a list call (the query parameters of a LIST request).</summary>
public sealed record ListOptions
{
    public static ListOptions Default { get; } = new();

    public string? LabelSelector { get; init; }

    public string? FieldSelector { get; init; }

    /// <summary>Page size; 0 or null for everything.</summary>
    public int? Limit { get; init; }

    /// <summary>The continue token of the previous page.</summary>
    public string? Continue { get; init; }
}

/// <summary>Options of create, update, patch and apply calls.</summary>
public sealed record WriteOptions
{
    public static WriteOptions Default { get; } = new();

    /// <summary>The field manager recorded in managedFields (required for apply).</summary>
    public string? FieldManager { get; init; }

    /// <summary><c>dryRun=All</c>: validate and return the result without storing it.</summary>
    public bool DryRun { get; init; }

    /// <summary>Server-side apply: take ownership of conflicting fields.</summary>
    public bool Force { get; init; }

    /// <summary>
    /// Unknown fields of custom resources: <c>Ignore</c> (default: pruned silently), <c>Warn</c> (pruned, reported in
    /// <see cref="Warnings"/>) or <c>Strict</c> (rejected with 400 BadRequest), as the <c>fieldValidation</c> parameter.
    /// </summary>
    public string? FieldValidation { get; init; }

    /// <summary>Receives warnings (unknown fields under <c>Warn</c>); the HTTP layer sends them as Warning headers.</summary>
    public ICollection<string>? Warnings { get; init; }
}

/// <summary>How dependents are treated when their owner is deleted.</summary>
public enum PropagationPolicy
{
    /// <summary>Delete the owner now; the garbage collector deletes dependents afterwards.</summary>
    Background,

    /// <summary>The owner stays (deletionTimestamp, finalizer <c>foregroundDeletion</c>) until its dependents are gone.</summary>
    Foreground,

    /// <summary>Remove the owner reference from dependents and keep them.</summary>
    Orphan,
}

/// <summary>Options of a delete call (the DeleteOptions body and query parameters).</summary>
public sealed record DeleteOptions
{
    public static DeleteOptions Default { get; } = new();

    public PropagationPolicy? PropagationPolicy { get; init; }

    public bool DryRun { get; init; }

    /// <summary>Precondition: the object's uid must equal this.</summary>
    public string? PreconditionUid { get; init; }

    /// <summary>Precondition: the object's resourceVersion must equal this.</summary>
    public string? PreconditionResourceVersion { get; init; }

    /// <summary>Pods: 0 deletes at once even when graceful pod deletion is on.</summary>
    public long? GracePeriodSeconds { get; init; }
}

/// <summary>Options of a watch.</summary>
public sealed record WatchOptions
{
    public static WatchOptions Default { get; } = new();

    /// <summary>Empty or "0": send the current objects as ADDED first; otherwise the events after this version (410 if too old).</summary>
    public string? ResourceVersion { get; init; }

    public string? LabelSelector { get; init; }

    public string? FieldSelector { get; init; }

    public bool AllowBookmarks { get; init; }

    /// <summary>Send the current objects as ADDED, then a bookmark annotated <c>k8s.io/initial-events-end</c>.</summary>
    public bool? SendInitialEvents { get; init; }

    /// <summary>Interval between bookmarks when <see cref="AllowBookmarks"/> is set (default from the server options).</summary>
    public TimeSpan? BookmarkInterval { get; init; }
}

/// <summary>The result of a list: items (fresh copies), the list's resourceVersion and the next page's token.</summary>
public sealed record ObjectList(IReadOnlyList<StoredObject> Items, long ResourceVersion, string? Continue, long? RemainingItemCount);

/// <summary>Settings of the object store.</summary>
public sealed record ClusterApiOptions
{
    /// <summary>Watch events kept per resource for resuming watches; older resourceVersions get 410 Gone.</summary>
    public int WatchHistoryPerResource { get; init; } = 4096;

    /// <summary>A watcher with this many undelivered events is disconnected (it resumes from its last resourceVersion or relists).</summary>
    public int MaxPendingWatchEvents { get; init; } = 100_000;

    /// <summary>Bookmark interval for watches that allow bookmarks.</summary>
    public TimeSpan BookmarkInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// Pods: when true, deleting a pod only sets deletionTimestamp (a kubelet simulator removes it);
    /// when false (the default, no kubelet), pods are removed at once like other objects.
    /// </summary>
    public bool GracefulPodDeletion { get; init; }
}
