using System.Text.RegularExpressions;
using Lowbit.Schema;

namespace Lowbit.Api.Tests;

public partial class InvalidCorpusTests
{
    public static TheoryData<string> InvalidFiles()
    {
        var data = new TheoryData<string>();
        foreach (var file in ManifestChecks.YamlFiles(RepoPaths.InvalidCorpus))
        {
            data.Add(Path.GetFileName(file));
        }

        return data;
    }

    [Fact]
    public void Does_hold_at_least_thirty_manifests_each_with_an_expectation()
    {
        var files = ManifestChecks.YamlFiles(RepoPaths.InvalidCorpus).ToList();
        Assert.True(files.Count >= 30, $"only {files.Count} invalid manifests");
        Assert.All(files, f => Assert.NotEmpty(Expectations(File.ReadAllText(f))));
    }

    [Theory]
    [MemberData(nameof(InvalidFiles))]
    public void Does_reject_the_manifest_with_an_error_naming_the_field(string fileName)
    {
        var text = File.ReadAllText(Path.Combine(RepoPaths.InvalidCorpus, fileName));
        var errors = ManifestChecks.Admit(Yaml.ParseObject(text));
        Assert.NotEmpty(errors);
        foreach (var (field, substring) in Expectations(text))
        {
            Assert.True(
                errors.Any(e => e.Field == field && e.Message.Contains(substring, StringComparison.Ordinal)),
                $"{fileName}: expected an error at '{field}' containing '{substring}', got: {string.Join(" | ", errors)}");
        }
    }

    private static List<(string Field, string Substring)> Expectations(string text) =>
        ExpectLine().Matches(text).Select(m => (m.Groups[1].Value, m.Groups[2].Value.Trim())).ToList();

    [GeneratedRegex(@"^# expect: (\S+) (.+)$", RegexOptions.Multiline)]
    private static partial Regex ExpectLine();
}
