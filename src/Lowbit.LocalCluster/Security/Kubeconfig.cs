using System.Text;

namespace Lowbit.LocalCluster.Security;

/// <summary>Writes the kubeconfig clients use: the server URL, the CA (certificate-authority-data) and a bearer token.</summary>
public static class Kubeconfig
{
    public const string ContextName = "lowbit-local";

    public static string Render(string serverUrl, string caPem, string token)
    {
        var ca = Convert.ToBase64String(Encoding.UTF8.GetBytes(caPem));
        return $"""
            apiVersion: v1
            kind: Config
            clusters:
            - name: {ContextName}
              cluster:
                server: {serverUrl}
                certificate-authority-data: {ca}
            users:
            - name: {ContextName}
              user:
                token: {token}
            contexts:
            - name: {ContextName}
              context:
                cluster: {ContextName}
                user: {ContextName}
                namespace: default
            current-context: {ContextName}
            preferences: {"{}"}

            """;
    }

    public static void Write(string path, string serverUrl, string caPem, string token)
    {
        var directory = Path.GetDirectoryName(Path.GetFullPath(path));
        if (directory is not null)
        {
            Directory.CreateDirectory(directory);
        }
        var temp = path + ".tmp";
        File.WriteAllText(temp, Render(serverUrl, caPem, token));
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(temp, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        File.Move(temp, path, overwrite: true);
    }
}
