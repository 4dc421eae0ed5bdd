using Lowbit.Api;
using Lowbit.Operator.Builders;
using Lowbit.Planner;

namespace Lowbit.Operator.Status;

/// <summary>The outcome of a Job-backed resource (QuantizedModel, FineTuneJob) from its plan and observed children (pure).</summary>
public static class JobOutcomes
{
    public static Outcome Of(PlanResult? plan, WorkloadPlacement? placement, WorkloadObservation observed, string doneMessage)
    {
        ArgumentNullException.ThrowIfNull(observed);
        if (observed.Blocker is { } blocker)
        {
            return blocker;
        }

        if (plan is NoFit noFit)
        {
            return new Outcome.Stalled(StatusParts.NoFitReason(noFit), StatusParts.NoFitMessage(noFit));
        }

        if (StatusParts.JobFinished(observed.Job) == true)
        {
            return new Outcome.Succeeded(doneMessage);
        }

        var diagnosis = observed.Diagnosis;
        if (placement is null)
        {
            return diagnosis switch
            {
                PodDiagnosis.OutOfMemory oom => new Outcome.Stalled(oom.Reason, $"{oom.Message}; no feasible placement has more memory"),
                PodDiagnosis.Unschedulable => new Outcome.Stalled(Conditions.Reasons.Unschedulable, $"{diagnosis.Message}; every feasible placement timed out"),
                _ => new Outcome.Stalled(Conditions.Reasons.InsufficientGpuMemory, "no feasible placement left"),
            };
        }

        switch (diagnosis)
        {
            case PodDiagnosis.BadInput or PodDiagnosis.ImagePullFailed or PodDiagnosis.SecretNotFound:
                return new Outcome.Stalled(diagnosis.Reason, diagnosis.Message);
            case PodDiagnosis.OutOfMemory when observed.PlacementChange is { } change:
                return new Outcome.InProgress(diagnosis.Reason, $"{diagnosis.Message}; {change}");
            case PodDiagnosis.Unschedulable when observed.PlacementChange is { } change:
                return new Outcome.InProgress(Conditions.Reasons.Unschedulable, $"{diagnosis.Message}; {change}");
            case PodDiagnosis.Unschedulable:
                return new Outcome.InProgress(Conditions.Reasons.WaitingForGpu, $"waiting for {placement.Label}: {diagnosis.Message}");
        }

        if (StatusParts.JobFinished(observed.Job) == false)
        {
            var failed = observed.Job!.Status!.Conditions!.First(c => c.Type == "Failed" && c.Status == "True");
            var detail = diagnosis is PodDiagnosis.Healthy ? "" : $": {diagnosis.Message}";
            return new Outcome.Stalled(diagnosis is PodDiagnosis.Healthy ? Conditions.Reasons.Failed : diagnosis.Reason, $"Job failed ({failed.Reason}){detail}");
        }

        return observed.Job is null
            ? new Outcome.InProgress(Conditions.Reasons.Pending, $"creating the Job on {placement.Label}")
            : new Outcome.InProgress(Conditions.Reasons.Running, $"running on {placement.Label}");
    }

    /// <summary><c>status.phase</c> for printer columns.</summary>
    public static string Phase(Outcome outcome, WorkloadObservation observed) => outcome switch
    {
        Outcome.Succeeded => "Succeeded",
        Outcome.Stalled => "Failed",
        _ when observed.Job?.Status?.Active > 0 => "Running",
        _ => "Pending",
    };
}
