using System.Globalization;
using System.Text.RegularExpressions;
using k8s.Models;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// Pod annotations that script a pod on a <c>simulate</c> node. Each may be suffixed with
/// <c>.&lt;container&gt;</c> to apply to one container only (e.g. <c>sim.lowbit.dev/exit-code.main</c>).
/// </summary>
public static partial class SimulationAnnotations
{
    public const string Prefix = "sim.lowbit.dev/";

    /// <summary>
    /// "simulate": run this pod simulated even on an <c>execute</c> node (used by <c>make run</c> for engine verbs
    /// that do not exist yet, so their pods still complete with a scripted result).
    /// </summary>
    public const string Mode = Prefix + "mode";

    /// <summary>Exit code of the container (default 0; 137 when reason is OOMKilled).</summary>
    public const string ExitCode = Prefix + "exit-code";

    /// <summary>Terminated reason (default Completed for 0, Error otherwise; OOMKilled implies exit code 137).</summary>
    public const string Reason = Prefix + "reason";

    /// <summary>The termination message (what the container would write to /dev/termination-log).</summary>
    public const string TerminationMessage = Prefix + "termination-message";

    /// <summary>Log lines written when the container starts (newline-separated).</summary>
    public const string Log = Prefix + "log";

    /// <summary>How long the container runs ("30s", "500ms", "2m", or seconds). Default: forever for restartPolicy Always, otherwise the kubelet's default.</summary>
    public const string Duration = Prefix + "duration";

    /// <summary>"fail": the image pull fails (ErrImagePull, then ImagePullBackOff); the pod stays Pending.</summary>
    public const string ImagePull = Prefix + "image-pull";

    /// <summary>A disruption reason (PreemptionByScheduler, DeletionByTaintManager, EvictionByEvictionAPI, TerminationByKubelet): the pod gets DisruptionTarget=True and is killed (137) after the duration.</summary>
    public const string Disruption = Prefix + "disruption";

    /// <summary>Readiness: "false" keeps running containers unready (a stuck rollout); a duration delays readiness.</summary>
    public const string Ready = Prefix + "ready";

    public static string? Get(V1Pod pod, string annotation, string? container = null)
    {
        var annotations = pod.Metadata.Annotations;
        if (annotations is null)
        {
            return null;
        }
        if (container is not null && annotations.TryGetValue($"{annotation}.{container}", out var specific))
        {
            return specific;
        }
        return annotations.TryGetValue(annotation, out var value) ? value : null;
    }

    /// <summary>Parses "1m30s", "250ms", "2s", "1.5" (seconds); null when absent.</summary>
    public static TimeSpan? ParseDuration(string? text, string annotation)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }
        if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var seconds) && seconds >= 0)
        {
            return TimeSpan.FromSeconds(seconds);
        }
        var match = GoDuration().Match(text.Trim());
        if (!match.Success)
        {
            throw new FormatException($"annotation {annotation}: '{text}' is not a duration; accepted: e.g. 500ms, 2s, 1m30s, 1h, or a number of seconds");
        }
        var total = TimeSpan.Zero;
        foreach (Capture part in match.Groups["part"].Captures)
        {
            var unitMatch = UnitPart().Match(part.Value);
            var amount = double.Parse(unitMatch.Groups[1].Value, CultureInfo.InvariantCulture);
            total += unitMatch.Groups[2].Value switch
            {
                "ms" => TimeSpan.FromMilliseconds(amount),
                "s" => TimeSpan.FromSeconds(amount),
                "m" => TimeSpan.FromMinutes(amount),
                _ => TimeSpan.FromHours(amount),
            };
        }
        return total;
    }

    [GeneratedRegex(@"^(?<part>[0-9]+(\.[0-9]+)?(ms|s|m|h))+$")]
    private static partial Regex GoDuration();

    [GeneratedRegex(@"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$")]
    private static partial Regex UnitPart();
}
