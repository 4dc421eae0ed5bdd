using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Tests;

namespace Lowbit.Chart.Tests;

/// <summary>Runs an Argo CD <c>health.lua</c> with the real Lua interpreter (Debian's lua5.4) on one object, as Argo CD does (global <c>obj</c>, returns <c>hs</c>).</summary>
internal static class ArgoHealth
{
    public static string Root => Path.Combine(ClusterFixture.RepoRoot, "argocd", "resource_customizations", "lowbit.dev");

    public static async Task<(string Status, string Message)> RunAsync(string kind, JsonObject obj)
    {
        var lua = "/usr/bin/lua5.4";
        Assert.True(File.Exists(lua), "lua5.4 is missing: run `bash .ci/tools.sh` (it installs Debian's lua5.4)");
        var script = Path.Combine(Path.GetTempPath(), $"lowbit-health-{Guid.NewGuid():N}.lua");
        var health = Path.Combine(Root, kind, "health.lua");
        await File.WriteAllTextAsync(script, $"""
            obj = {ToLua(obj)}
            local check = assert(loadfile({Quote(health)}))
            local hs = check()
            io.write(tostring(hs.status), "\n", tostring(hs.message or ""), "\n")
            """);
        try
        {
            var result = await ClusterFixture.RunToolAsync(lua, [script], "", Path.GetTempPath(), TimeSpan.FromSeconds(20));
            Assert.True(result.ExitCode == 0, $"lua5.4 {health} failed: {result.StdErr}");
            var lines = result.StdOut.Split('\n');
            return (lines[0], lines.Length > 1 ? lines[1] : "");
        }
        finally
        {
            File.Delete(script);
        }
    }

    /// <summary>A Lua table constructor for a JSON value (arrays 1-based, null fields left out).</summary>
    public static string ToLua(JsonNode? node) => node switch
    {
        null => "nil",
        JsonObject o => "{" + string.Join(", ", o.Where(kv => kv.Value is not null).Select(kv => $"[{Quote(kv.Key)}] = {ToLua(kv.Value)}")) + "}",
        JsonArray a => "{" + string.Join(", ", a.Select(ToLua)) + "}",
        JsonValue v when v.TryGetValue<bool>(out var b) => b ? "true" : "false",
        JsonValue v when v.TryGetValue<long>(out var l) => l.ToString(CultureInfo.InvariantCulture),
        JsonValue v when v.TryGetValue<int>(out var i) => i.ToString(CultureInfo.InvariantCulture),
        JsonValue v when v.TryGetValue<double>(out var d) => d.ToString("R", CultureInfo.InvariantCulture),
        JsonValue v => Quote(v.ToString()),
        _ => throw new ArgumentOutOfRangeException(nameof(node)),
    };

    private static string Quote(string text)
    {
        var builder = new StringBuilder("\"");
        foreach (var c in text)
        {
            builder.Append(c switch
            {
                '\\' => "\\\\",
                '"' => "\\\"",
                '\n' => "\\n",
                '\r' => "\\r",
                _ when c < ' ' => $"\\{(int)c:D3}",
                _ => c.ToString(),
            });
        }

        return builder.Append('"').ToString();
    }
}
