using System.Text.RegularExpressions;
using Lowbit.LocalCluster.Tests;

namespace Lowbit.Chart.Tests;

/// <summary>
/// The Dockerfile, checked statically (no container engine runs in CI): targets operator and engine exist, every
/// base image is pinned (a version tag other than latest, or a digest), every COPY source exists in the build
/// context, each shipped stage ends as a non-root user, and the operator image carries no libtorch.
/// </summary>
public sealed partial class DockerfileTests
{
    private sealed record Stage(string Name, string Base, List<(string Instruction, string Arguments)> Lines);

    private static string Root => ClusterFixture.RepoRoot;

    private static List<Stage> Parse(out Dictionary<string, string> args)
    {
        var text = File.ReadAllText(Path.Combine(Root, "Dockerfile"));
        var logical = Continuation().Replace(text, " ").Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        args = new Dictionary<string, string>(StringComparer.Ordinal);
        var stages = new List<Stage>();
        foreach (var line in logical)
        {
            var space = line.IndexOf(' ', StringComparison.Ordinal);
            var (instruction, rest) = (line[..space].ToUpperInvariant(), line[(space + 1)..].Trim());
            if (instruction == "ARG" && stages.Count == 0 && rest.Split('=', 2) is [var name, var value])
            {
                args[name] = value;
            }
            else if (instruction == "FROM")
            {
                var match = FromLine().Match(rest);
                Assert.True(match.Success, $"FROM without AS name: {line}");
                stages.Add(new Stage(match.Groups["name"].Value, match.Groups["base"].Value, []));
            }
            else
            {
                Assert.NotEmpty(stages);
                stages[^1].Lines.Add((instruction, rest));
            }
        }

        return stages;
    }

    [Fact]
    public void Does_pin_every_base_image_and_never_use_latest()
    {
        var stages = Parse(out var args);
        Assert.Contains(stages, s => s.Name == "operator");
        Assert.Contains(stages, s => s.Name == "engine");
        foreach (var stage in stages)
        {
            var image = ArgRef().Replace(stage.Base, m => args.TryGetValue(m.Groups[1].Value, out var v) ? v : throw new Xunit.Sdk.XunitException($"stage {stage.Name}: unknown ARG {m.Value}"));
            if (stages.TakeWhile(s => s != stage).Any(s => s.Name == image))
            {
                continue;
            }

            var pinned = image.Contains("@sha256:", StringComparison.Ordinal)
                || (image.LastIndexOf(':') > image.LastIndexOf('/') && !image.EndsWith(":latest", StringComparison.Ordinal));
            Assert.True(pinned, $"stage {stage.Name}: base image '{image}' is not pinned to a version tag or digest");
        }

        Assert.DoesNotContain(":latest", File.ReadAllText(Path.Combine(Root, "Dockerfile")), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_copy_only_sources_that_exist_and_stages_that_come_before()
    {
        var stages = Parse(out _);
        var ignored = File.ReadAllLines(Path.Combine(Root, ".dockerignore")).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        var copies = 0;
        for (var i = 0; i < stages.Count; i++)
        {
            foreach (var (instruction, arguments) in stages[i].Lines.Where(l => l.Instruction is "COPY" or "ADD"))
            {
                Assert.Equal("COPY", instruction);
                var parts = arguments.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                var from = parts.FirstOrDefault(p => p.StartsWith("--from=", StringComparison.Ordinal))?["--from=".Length..];
                var paths = parts.Where(p => !p.StartsWith("--", StringComparison.Ordinal)).ToList();
                Assert.True(paths.Count >= 2, $"COPY needs a source and a destination: {arguments}");
                if (from is not null)
                {
                    Assert.True(stages.Take(i).Any(s => s.Name == from), $"COPY --from={from} in stage {stages[i].Name}: no earlier stage of that name");
                    continue;
                }

                foreach (var source in paths[..^1])
                {
                    copies++;
                    var full = Path.Combine(Root, source.TrimEnd('/'));
                    Assert.True(File.Exists(full) || Directory.Exists(full), $"COPY {source} (stage {stages[i].Name}): not in the build context");
                    Assert.DoesNotContain(ignored, pattern => pattern.TrimEnd('/') == source.TrimEnd('/'));
                }
            }
        }

        Assert.True(copies >= 4, "expected the build stage to copy the sources");
    }

    [Theory]
    [InlineData("operator")]
    [InlineData("engine")]
    public void Does_run_each_image_as_a_non_root_user(string target)
    {
        var stage = Parse(out _).Single(s => s.Name == target);
        var user = stage.Lines.LastOrDefault(l => l.Instruction == "USER").Arguments;
        Assert.False(string.IsNullOrEmpty(user), $"stage {target} sets no USER (it would run as root)");
        var uid = user.Split(':')[0];
        Assert.True(long.TryParse(uid, out var id) && id > 0, $"stage {target}: USER {user} must be a numeric non-root UID (Pod Security runAsNonRoot checks numbers)");
        Assert.Contains(stage.Lines, l => l.Instruction == "ENTRYPOINT");
    }

    [Fact]
    public void Does_keep_libtorch_out_of_the_operator_image_and_in_the_engine_image()
    {
        var stages = Parse(out _);
        var operatorText = string.Join('\n', stages.Single(s => s.Name == "operator").Lines.Select(l => l.Arguments));
        Assert.DoesNotContain("torch", operatorText, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("--from=build /out/operator/", operatorText, StringComparison.Ordinal);
        var engineText = string.Join('\n', stages.Single(s => s.Name == "engine").Lines.Select(l => l.Arguments));
        Assert.Contains("torch==${TORCH_VERSION}", engineText, StringComparison.Ordinal);
        Assert.Contains("--from=engine-native /out/native/", engineText, StringComparison.Ordinal);
        Assert.Contains("-p:LowbitTorchBackend=none", string.Join('\n', stages.Single(s => s.Name == "build").Lines.Select(l => l.Arguments)), StringComparison.Ordinal);
    }

    [GeneratedRegex(@"\\\r?\n")]
    private static partial Regex Continuation();

    [GeneratedRegex(@"^(?<base>\S+)\s+AS\s+(?<name>[a-z0-9-]+)$", RegexOptions.IgnoreCase)]
    private static partial Regex FromLine();

    [GeneratedRegex(@"\$\{([A-Z_]+)\}")]
    private static partial Regex ArgRef();
}
