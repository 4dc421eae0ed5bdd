using System.Text.Json.Nodes;

namespace Lowbit.Chart.Tests;

/// <summary>
/// The Pod Security Standards' "restricted" profile (baseline plus restricted controls), implemented from
/// https://kubernetes.io/docs/concepts/security/pod-security-standards/ (Kubernetes v1.33): <see cref="Check"/> returns
/// every violation of a pod spec (and its metadata's AppArmor annotations) as "field: why".
/// </summary>
internal static class PodSecurityRestricted
{
    private static readonly HashSet<string> BaselineCapabilities =
    [
        "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
    ];

    private static readonly HashSet<string> SafeSysctls =
    [
        "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes",
    ];

    private static readonly HashSet<string> SeLinuxTypes = ["", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"];

    private static readonly HashSet<string> RestrictedVolumeSources =
        ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

    /// <summary>Violations of the restricted profile by a pod template (<c>metadata</c> + <c>spec</c>) or a pod.</summary>
    public static IReadOnlyList<string> Check(JsonObject podTemplate)
    {
        var errors = new List<string>();
        var spec = podTemplate["spec"] as JsonObject ?? throw new ArgumentException("no spec", nameof(podTemplate));
        var podSc = spec["securityContext"] as JsonObject;
        var containers = new List<(string Path, JsonObject Container)>();
        foreach (var list in new[] { "containers", "initContainers", "ephemeralContainers" })
        {
            if (spec[list] is JsonArray array)
            {
                for (var i = 0; i < array.Count; i++)
                {
                    containers.Add(($"spec.{list}[{i}]", array[i]!.AsObject()));
                }
            }
        }

        // Baseline: HostProcess, host namespaces.
        if (Bool(podSc?["windowsOptions"]?["hostProcess"]) == true)
        {
            errors.Add("spec.securityContext.windowsOptions.hostProcess: must not be true");
        }

        foreach (var field in new[] { "hostNetwork", "hostPID", "hostIPC" })
        {
            if (Bool(spec[field]) == true)
            {
                errors.Add($"spec.{field}: must not be true");
            }
        }

        // Baseline: HostPath volumes; restricted: volume types.
        if (spec["volumes"] is JsonArray volumes)
        {
            for (var i = 0; i < volumes.Count; i++)
            {
                var volume = volumes[i]!.AsObject();
                foreach (var (key, _) in volume)
                {
                    if (key != "name" && !RestrictedVolumeSources.Contains(key))
                    {
                        errors.Add($"spec.volumes[{i}].{key}: volume type not allowed (allowed: {string.Join(", ", RestrictedVolumeSources)})");
                    }
                }
            }
        }

        // Baseline: sysctls, AppArmor, SELinux, seccomp at pod level.
        if (podSc?["sysctls"] is JsonArray sysctls)
        {
            foreach (var sysctl in sysctls)
            {
                if (!SafeSysctls.Contains((string?)sysctl?["name"] ?? ""))
                {
                    errors.Add($"spec.securityContext.sysctls: '{sysctl?["name"]}' is not a safe sysctl");
                }
            }
        }

        CheckAppArmor(podSc?["appArmorProfile"], "spec.securityContext.appArmorProfile", errors);
        CheckSeLinux(podSc?["seLinuxOptions"], "spec.securityContext.seLinuxOptions", errors);
        if (podTemplate["metadata"]?["annotations"] is JsonObject annotations)
        {
            foreach (var (key, value) in annotations)
            {
                if (key.StartsWith("container.apparmor.security.beta.kubernetes.io/", StringComparison.Ordinal)
                    && (string?)value is not ("runtime/default" or null) && !((string?)value ?? "").StartsWith("localhost/", StringComparison.Ordinal))
                {
                    errors.Add($"metadata.annotations[{key}]: AppArmor profile must be runtime/default or localhost/*");
                }
            }
        }

        var podSeccomp = (string?)podSc?["seccompProfile"]?["type"];
        if (podSeccomp is not (null or "RuntimeDefault" or "Localhost"))
        {
            errors.Add($"spec.securityContext.seccompProfile.type: '{podSeccomp}' not allowed (RuntimeDefault or Localhost)");
        }

        var podNonRoot = Bool(podSc?["runAsNonRoot"]);
        if (podNonRoot == false)
        {
            errors.Add("spec.securityContext.runAsNonRoot: must not be false");
        }

        if (Long(podSc?["runAsUser"]) == 0)
        {
            errors.Add("spec.securityContext.runAsUser: must not be 0");
        }

        foreach (var (path, container) in containers)
        {
            var sc = container["securityContext"] as JsonObject;
            if (Bool(sc?["windowsOptions"]?["hostProcess"]) == true)
            {
                errors.Add($"{path}.securityContext.windowsOptions.hostProcess: must not be true");
            }

            if (Bool(sc?["privileged"]) == true)
            {
                errors.Add($"{path}.securityContext.privileged: must not be true");
            }

            var added = sc?["capabilities"]?["add"] as JsonArray ?? [];
            foreach (var cap in added.Select(c => (string?)c ?? ""))
            {
                if (!BaselineCapabilities.Contains(cap))
                {
                    errors.Add($"{path}.securityContext.capabilities.add: '{cap}' is not allowed by baseline");
                }
                else if (cap != "NET_BIND_SERVICE")
                {
                    errors.Add($"{path}.securityContext.capabilities.add: restricted allows only NET_BIND_SERVICE, not '{cap}'");
                }
            }

            var dropped = (sc?["capabilities"]?["drop"] as JsonArray ?? []).Select(c => (string?)c).ToList();
            if (!dropped.Contains("ALL"))
            {
                errors.Add($"{path}.securityContext.capabilities.drop: must include ALL");
            }

            if (container["ports"] is JsonArray ports)
            {
                for (var i = 0; i < ports.Count; i++)
                {
                    if (Long(ports[i]?["hostPort"]) is { } hostPort and not 0)
                    {
                        errors.Add($"{path}.ports[{i}].hostPort: must be unset or 0 (got {hostPort})");
                    }
                }
            }

            CheckAppArmor(sc?["appArmorProfile"], $"{path}.securityContext.appArmorProfile", errors);
            CheckSeLinux(sc?["seLinuxOptions"], $"{path}.securityContext.seLinuxOptions", errors);
            if ((string?)sc?["procMount"] is not (null or "Default"))
            {
                errors.Add($"{path}.securityContext.procMount: must be Default");
            }

            var seccomp = (string?)sc?["seccompProfile"]?["type"];
            if (seccomp is not (null or "RuntimeDefault" or "Localhost"))
            {
                errors.Add($"{path}.securityContext.seccompProfile.type: '{seccomp}' not allowed (RuntimeDefault or Localhost)");
            }
            else if (seccomp is null && podSeccomp is null)
            {
                errors.Add($"{path}.securityContext.seccompProfile.type: must be RuntimeDefault or Localhost (here or at pod level)");
            }

            if (Bool(sc?["allowPrivilegeEscalation"]) != false)
            {
                errors.Add($"{path}.securityContext.allowPrivilegeEscalation: must be false");
            }

            var nonRoot = Bool(sc?["runAsNonRoot"]);
            if (nonRoot == false)
            {
                errors.Add($"{path}.securityContext.runAsNonRoot: must not be false");
            }
            else if (nonRoot is null && podNonRoot != true)
            {
                errors.Add($"{path}.securityContext.runAsNonRoot: must be true (here or at pod level)");
            }

            if (Long(sc?["runAsUser"]) == 0)
            {
                errors.Add($"{path}.securityContext.runAsUser: must not be 0");
            }
        }

        return errors;
    }

    private static void CheckAppArmor(JsonNode? profile, string path, List<string> errors)
    {
        if ((string?)profile?["type"] is { } type && type is not ("RuntimeDefault" or "Localhost"))
        {
            errors.Add($"{path}.type: '{type}' not allowed (RuntimeDefault or Localhost)");
        }
    }

    private static void CheckSeLinux(JsonNode? options, string path, List<string> errors)
    {
        if (options is null)
        {
            return;
        }

        if (!SeLinuxTypes.Contains((string?)options["type"] ?? ""))
        {
            errors.Add($"{path}.type: '{options["type"]}' not allowed");
        }

        foreach (var field in new[] { "user", "role" })
        {
            if (!string.IsNullOrEmpty((string?)options[field]))
            {
                errors.Add($"{path}.{field}: must be unset");
            }
        }
    }

    private static bool? Bool(JsonNode? node) => node is JsonValue v && v.TryGetValue<bool>(out var b) ? b : null;

    private static long? Long(JsonNode? node) => node is JsonValue v && v.TryGetValue<long>(out var l) ? l : node is JsonValue i && i.TryGetValue<int>(out var n) ? n : null;
}
