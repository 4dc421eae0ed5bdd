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
        PrivateFiles.WriteAllText(path, Render(serverUrl, caPem, token));
    }
}

/// <summary>Files only their owner may read: created with mode 0600 (never world-readable, not even briefly), written
/// to a temporary name, flushed to disk, renamed over the target, and the directory synced so the rename survives a
/// power cut.</summary>
public static partial class PrivateFiles
{
    public const UnixFileMode OwnerOnly = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    public static void WriteAllText(string path, string text) => Write(path, stream => stream.Write(Encoding.UTF8.GetBytes(text)));

    /// <summary>Writes through <paramref name="write"/> into a 0600 temporary file, then renames it to <paramref name="path"/> and syncs the directory.</summary>
    public static void Write(string path, Action<FileStream> write)
    {
        ArgumentNullException.ThrowIfNull(write);
        var temp = path + ".tmp";
        var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 1 << 16 };
        if (!OperatingSystem.IsWindows())
        {
            options.UnixCreateMode = OwnerOnly;
        }
        using (var stream = new FileStream(temp, options))
        {
            if (!OperatingSystem.IsWindows())
            {
                // An existing temporary file keeps its old mode: tighten it before any byte is written.
                File.SetUnixFileMode(stream.SafeFileHandle, OwnerOnly);
            }
            write(stream);
            stream.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
        SyncDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
    }

    /// <summary>fsync(2) on a directory, so a rename in it is durable (no-op off Unix).</summary>
    public static void SyncDirectory(string directory)
    {
        if (OperatingSystem.IsWindows())
        {
            return;
        }
        var fd = Open(directory, 0 /* O_RDONLY */);
        if (fd < 0)
        {
            return;
        }
        try
        {
            _ = Fsync(fd);
        }
        finally
        {
            _ = Close(fd);
        }
    }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "open", StringMarshalling = System.Runtime.InteropServices.StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "fsync")]
    private static partial int Fsync(int fd);

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
