using System.Globalization;
using k8s.Models;
using Lowbit.LocalCluster.Auth;
using Lowbit.LocalCluster.Security;

namespace Lowbit.LocalCluster.Kubelet;

/// <summary>
/// How executed pods reach the API server: what a kubelet gives every pod (a service-account token, the cluster CA,
/// the namespace, <c>KUBERNETES_SERVICE_HOST</c>/<c>PORT</c>), for a process on this host.
/// </summary>
public sealed record PodApiAccess
{
    /// <summary>The API server's URL (https://127.0.0.1:&lt;port&gt;).</summary>
    public required Uri Server { get; init; }

    /// <summary>The CA that signed the server's certificate (PEM); empty for plain HTTP.</summary>
    public required string CaPem { get; init; }

    /// <summary>Issues the pods' service-account tokens (the API server authenticates them as <c>system:serviceaccount:&lt;ns&gt;:&lt;name&gt;</c>).</summary>
    public required TokenAuthenticator Tokens { get; init; }
}

/// <summary>
/// The projected service-account volume of an executed pod, written to a folder: <c>token</c>, <c>ca.crt</c> and
/// <c>namespace</c> (the files a real kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount, which is mapped
/// to this folder like any mount), plus a <c>kubeconfig</c> naming the same server, CA and token. Programs cannot read
/// a hard-coded /var/run/secrets path on this host, so the process gets <c>KUBECONFIG</c> pointing at that kubeconfig:
/// client-go and the C# client read it first, so an in-cluster program connects as its service account unchanged.
/// One token per pod, revoked when the pod's folder is cleaned up.
/// </summary>
internal static class ServiceAccountCredentials
{
    public const string MountPath = "/var/run/secrets/kubernetes.io/serviceaccount";

    /// <summary>Whether the pod gets credentials: <c>automountServiceAccountToken</c> not false (the pod's setting wins).</summary>
    public static bool Wanted(V1Pod pod) => pod.Spec.AutomountServiceAccountToken != false;

    /// <summary>Writes the files into <paramref name="dir"/> once per pod (restarts reuse the token); returns the kubeconfig path.</summary>
    public static string Ensure(PodApiAccess access, V1Pod pod, string dir)
    {
        var kubeconfig = Path.Combine(dir, "kubeconfig");
        if (File.Exists(kubeconfig))
        {
            return kubeconfig;
        }
        var ns = pod.Metadata.NamespaceProperty;
        var account = string.IsNullOrEmpty(pod.Spec.ServiceAccountName) ? "default" : pod.Spec.ServiceAccountName;
        var token = access.Tokens.IssueServiceAccountToken(ns, account);
        Directory.CreateDirectory(dir);
        PrivateFiles.WriteAllText(Path.Combine(dir, "token"), token);
        File.WriteAllText(Path.Combine(dir, "ca.crt"), access.CaPem);
        File.WriteAllText(Path.Combine(dir, "namespace"), ns);
        var cluster = Kubeconfig.Render(access.Server.ToString().TrimEnd('/'), access.CaPem, token)
            .Replace("namespace: default", "namespace: " + ns, StringComparison.Ordinal);
        PrivateFiles.WriteAllText(kubeconfig, cluster);
        return kubeconfig;
    }

    /// <summary>The environment a kubelet sets for the API server's Service, plus KUBECONFIG (see the class).</summary>
    public static IEnumerable<KeyValuePair<string, string>> Environment(PodApiAccess access, string kubeconfig)
    {
        var port = access.Server.Port.ToString(CultureInfo.InvariantCulture);
        yield return new("KUBECONFIG", kubeconfig);
        yield return new("KUBERNETES_SERVICE_HOST", access.Server.Host);
        yield return new("KUBERNETES_SERVICE_PORT", port);
        yield return new("KUBERNETES_SERVICE_PORT_HTTPS", port);
    }

    /// <summary>Revokes the pod's token (the pod is gone; its bound token stops working, as on a real cluster).</summary>
    public static void Revoke(PodApiAccess access, string dir)
    {
        var file = Path.Combine(dir, "token");
        if (File.Exists(file))
        {
            access.Tokens.Revoke(File.ReadAllText(file).Trim());
        }
    }
}
