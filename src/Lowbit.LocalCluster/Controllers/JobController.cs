using k8s.Models;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// batch/v1 Jobs (NonIndexed): keeps <c>min(parallelism, completions - succeeded)</c> pods running, counts
/// failures against backoffLimit after applying the podFailurePolicy (rules in order: FailJob, Ignore, Count;
/// onExitCodes with In/NotIn and containerName; onPodConditions), enforces activeDeadlineSeconds and suspend,
/// and writes the status (active, ready, terminating, succeeded, failed, startTime, completionTime) with the
/// real conditions and reasons: Complete (with SuccessCriteriaMet), Failed with FailureTarget and reason
/// BackoffLimitExceeded, PodFailurePolicy or DeadlineExceeded.
/// </summary>
public sealed class JobController
{
    private readonly ClusterApi _api;
    private readonly Informer _jobs;
    private readonly PodControl _podControl;
    private readonly TimeProvider _time;
    private readonly ControllerLoop _loop;

    public JobController(ClusterApi api, Informer jobs, Informer pods, PodControl podControl, TimeProvider time, ILogger logger)
    {
        _api = api;
        _jobs = jobs;
        _podControl = podControl;
        _time = time;
        _loop = new ControllerLoop("job-controller", ReconcileAsync, time, logger);
        jobs.OnChange((old, job) =>
        {
            if (job is null && old is not null)
            {
                _podControl.Forget(old.Uid);
            }
            _loop.Enqueue((job ?? old)!.Key);
        });
        pods.OnChange((old, pod) =>
        {
            var obj = (pod ?? old)!;
            if (obj.OwnerUids.Count > 0 && obj.Labels.TryGetValue("batch.kubernetes.io/job-name", out var jobName))
            {
                _loop.Enqueue(StoredObject.KeyOf(obj.Namespace, jobName));
            }
        });
    }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(4, cancellationToken);

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _jobs.Get(ns, name);
        if (stored is null || stored.IsDeleting)
        {
            return Task.FromResult(Requeue.Done);
        }
        var job = stored.As<V1Job>();
        var spec = job.Spec;
        var status = job.Status ?? new V1JobStatus();
        var pods = _podControl.PodsOf(job.Metadata.Uid);
        var now = Typed.Truncate(_time.GetUtcNow());
        var finished = IsFinished(status);
        var active = pods.Where(PodControl.IsActive).ToList();
        if (finished)
        {
            foreach (var pod in active)
            {
                _podControl.Delete(job.Metadata.Uid, pod);
            }
            return Task.FromResult(Requeue.Done);
        }

        var succeeded = Math.Max(status.Succeeded ?? 0, pods.Count(p => p.Status?.Phase == "Succeeded"));
        var failedPods = pods.Where(p => p.Status?.Phase == "Failed").OrderBy(p => p.Metadata.CreationTimestamp).ToList();
        string? failJob = null;
        var countedFailures = 0;
        foreach (var pod in failedPods)
        {
            var (action, message) = PodFailurePolicy.Evaluate(spec.PodFailurePolicy, pod);
            if (action == "FailJob")
            {
                failJob ??= message;
            }
            if (action != "Ignore")
            {
                countedFailures++;
            }
        }
        var failed = Math.Max(status.Failed ?? 0, countedFailures);
        var suspended = spec.Suspend == true;
        var next = new V1JobStatus
        {
            StartTime = status.StartTime ?? (suspended ? null : now),
            Succeeded = succeeded,
            Failed = failed,
            Conditions = status.Conditions?.ToList(),
            UncountedTerminatedPods = new V1UncountedTerminatedPods(),
            CompletionTime = status.CompletionTime,
        };
        var completions = spec.Completions ?? 1;
        (string Reason, string Message)? failure = null;
        if (failJob is not null)
        {
            failure = ("PodFailurePolicy", failJob);
        }
        else if (failed > (spec.BackoffLimit ?? 6))
        {
            failure = ("BackoffLimitExceeded", "Job has reached the specified backoff limit");
        }
        else if (spec.ActiveDeadlineSeconds is { } deadline && next.StartTime is { } start && !suspended
            && now >= start.ToUniversalTime().AddSeconds(deadline))
        {
            failure = ("DeadlineExceeded", "Job was active longer than specified deadline");
        }

        if (failure is { } f)
        {
            foreach (var pod in active)
            {
                _podControl.Delete(job.Metadata.Uid, pod);
            }
            next.Conditions = SetCondition(next.Conditions, "FailureTarget", f.Reason, f.Message, now);
            next.Conditions = SetCondition(next.Conditions, "Failed", f.Reason, f.Message, now);
            active = [];
        }
        else if (succeeded >= completions)
        {
            foreach (var pod in active)
            {
                _podControl.Delete(job.Metadata.Uid, pod);
            }
            next.Conditions = SetCondition(next.Conditions, "SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods", now);
            next.Conditions = SetCondition(next.Conditions, "Complete", "CompletionsReached", "Reached expected number of succeeded pods", now);
            next.CompletionTime = now;
            active = [];
        }
        else
        {
            var wanted = suspended ? 0 : Math.Min(spec.Parallelism ?? 1, completions - succeeded);
            for (var i = active.Count; i < wanted; i++)
            {
                active.Add(_podControl.Create(job.Metadata.NamespaceProperty, spec.Template, job.Metadata.Name + "-",
                    Typed.OwnerReference(job, "batch/v1", "Job"), JobLabels(job)));
            }
            foreach (var pod in active.Skip(wanted).ToList())
            {
                _podControl.Delete(job.Metadata.Uid, pod);
                active.Remove(pod);
            }
            if (suspended)
            {
                next.Conditions = SetCondition(next.Conditions, "Suspended", "JobSuspended", "Job suspended", now);
            }
            else if (next.Conditions?.Any(c => c.Type == "Suspended" && c.Status == "True") == true)
            {
                next.Conditions = SetCondition(next.Conditions, "Suspended", "JobResumed", "Job resumed", now, "False");
            }
        }
        next.Active = active.Count == 0 ? null : active.Count;
        next.Ready = active.Count(PodControl.IsReady);
        next.Terminating = pods.Count(p => p.Metadata.DeletionTimestamp is not null && !PodControl.IsTerminal(p));
        next.Succeeded = next.Succeeded == 0 ? null : next.Succeeded;
        next.Failed = next.Failed == 0 ? null : next.Failed;
        if (!Typed.SameJson(status, next))
        {
            job.Status = next;
            _api.Replace(BuiltinResources.Jobs, job, "status");
        }
        if (failure is null && !IsFinished(next) && spec.ActiveDeadlineSeconds is { } ads && next.StartTime is { } started)
        {
            var left = started.ToUniversalTime().AddSeconds(ads) - now;
            return Task.FromResult(Requeue.In(left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(10)));
        }
        return Task.FromResult(Requeue.Done);
    }

    private static bool IsFinished(V1JobStatus status) =>
        status.Conditions?.Any(c => c.Type is "Complete" or "Failed" && c.Status == "True") == true;

    private static Dictionary<string, string> JobLabels(V1Job job) => new(StringComparer.Ordinal)
    {
        ["batch.kubernetes.io/job-name"] = job.Metadata.Name,
        ["job-name"] = job.Metadata.Name,
        ["batch.kubernetes.io/controller-uid"] = job.Metadata.Uid,
        ["controller-uid"] = job.Metadata.Uid,
    };

    private static List<V1JobCondition> SetCondition(IList<V1JobCondition>? conditions, string type, string reason, string message, DateTime now,
        string status = "True")
    {
        var list = conditions?.ToList() ?? [];
        var existing = list.FindIndex(c => c.Type == type);
        var condition = new V1JobCondition
        {
            Type = type,
            Status = status,
            Reason = reason,
            Message = message,
            LastProbeTime = now,
            LastTransitionTime = now,
        };
        if (existing >= 0)
        {
            if (list[existing].Status == status)
            {
                return list;
            }
            list[existing] = condition;
        }
        else
        {
            list.Add(condition);
        }
        return list;
    }
}

/// <summary>The Job podFailurePolicy evaluation (pure): the first matching rule's action, or Count.</summary>
public static class PodFailurePolicy
{
    public static (string Action, string? Message) Evaluate(V1PodFailurePolicy? policy, V1Pod pod)
    {
        var rules = policy?.Rules ?? [];
        for (var index = 0; index < rules.Count; index++)
        {
            var rule = rules[index];
            if (rule.OnExitCodes is { } onExitCodes)
            {
                foreach (var status in pod.Status?.ContainerStatuses ?? [])
                {
                    if (onExitCodes.ContainerName is { Length: > 0 } container && container != status.Name)
                    {
                        continue;
                    }
                    if (status.State?.Terminated is not { } terminated || terminated.ExitCode == 0)
                    {
                        continue;
                    }
                    var listed = onExitCodes.Values.Contains(terminated.ExitCode);
                    if (onExitCodes.OperatorProperty == "In" ? listed : !listed)
                    {
                        return (rule.Action, $"Container {status.Name} for pod {pod.Metadata.NamespaceProperty}/{pod.Metadata.Name} failed with exit code {terminated.ExitCode} matching {rule.Action} rule at index {index}");
                    }
                }
            }
            foreach (var pattern in rule.OnPodConditions ?? [])
            {
                if (pod.Status?.Conditions?.Any(c => c.Type == pattern.Type && c.Status == (pattern.Status ?? "True")) == true)
                {
                    return (rule.Action, $"Pod {pod.Metadata.NamespaceProperty}/{pod.Metadata.Name} has condition {pattern.Type} matching {rule.Action} rule at index {index}");
                }
            }
        }
        return ("Count", null);
    }
}
