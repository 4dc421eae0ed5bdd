using Lowbit.Api.Generation;

namespace Lowbit.Api.Tests;

public class CrdGoldenTests
{
    [Fact]
    public void Does_match_the_committed_crds_byte_for_byte()
    {
        var generated = CrdGenerator.GenerateFiles();
        var committed = Directory.GetFiles(RepoPaths.Crds, "*.yaml").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        Assert.True(
            generated.Select(g => g.FileName).Order(StringComparer.Ordinal).SequenceEqual(committed),
            $"crds/ holds [{string.Join(", ", committed)}] but the generator writes [{string.Join(", ", generated.Select(g => g.FileName))}]: run make crds");
        foreach (var (fileName, yaml) in generated)
        {
            var onDisk = File.ReadAllText(Path.Combine(RepoPaths.Crds, fileName));
            Assert.True(onDisk == yaml, $"crds/{fileName} differs from the generated CRD: run make crds (and commit the result)");
        }
    }

    [Fact]
    public void Does_generate_identical_yaml_twice()
    {
        Assert.Equal(CrdGenerator.GenerateFiles(), CrdGenerator.GenerateFiles());
    }
}
