using System.Text.Json.Nodes;
using Lowbit.Schema;

namespace Lowbit.Schema.Tests;

public class YamlTests
{
    [Theory]
    [InlineData("true")]
    [InlineData("False")]
    [InlineData("null")]
    [InlineData("~")]
    [InlineData("")]
    [InlineData("10")]
    [InlineData("1e3")]
    [InlineData("0.5")]
    [InlineData("10m")]
    [InlineData("a: b")]
    [InlineData("x # not a comment")]
    [InlineData("- item")]
    [InlineData("self.minReplicas <= self.maxReplicas")]
    [InlineData("has(self.bits) != has(self.targetBitsPerWeight)")]
    [InlineData("'quoted'")]
    [InlineData("\"double\"")]
    [InlineData("^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")]
    [InlineData("line\nbreak")]
    [InlineData(" leading space")]
    [InlineData("trailing space ")]
    [InlineData("{not: a map}")]
    [InlineData("ünïcödé")]
    public void Does_write_strings_that_read_back_as_the_same_string(string text)
    {
        var written = Yaml.Write(new JsonObject { ["key"] = text, ["list"] = new JsonArray(text) });
        var read = Yaml.ParseObject(written);
        Assert.Equal(text, (string?)read["key"]);
        Assert.Equal(text, (string?)read["list"]![0]);
    }

    [Fact]
    public void Does_resolve_plain_scalars_and_keep_quoted_ones_as_strings()
    {
        var obj = Yaml.ParseObject("""
            a: 4
            b: "4"
            c: 2.5
            d: true
            e: 'true'
            f: null
            g: 10m
            h: [1, x]
            """);
        Assert.Equal(System.Text.Json.JsonValueKind.Number, obj["a"]!.GetValueKind());
        Assert.Equal("4", (string?)obj["b"]);
        Assert.Equal(2.5, (double)obj["c"]!);
        Assert.True((bool)obj["d"]!);
        Assert.Equal("true", (string?)obj["e"]);
        Assert.True(obj.ContainsKey("f") && obj["f"] is null);
        Assert.Equal("10m", (string?)obj["g"]);
        Assert.Equal("x", (string?)obj["h"]![1]);
    }

    [Fact]
    public void Does_round_trip_nested_structures_in_key_order()
    {
        var node = JsonNode.Parse("""{"z":1,"a":{"list":[{"k":"v","n":[1,2]},[]],"empty":{}},"s":"x"}""");
        var written = Yaml.Write(node);
        Assert.StartsWith("z: 1\na:\n", written, StringComparison.Ordinal);
        Assert.True(JsonNode.DeepEquals(node, Yaml.ParseObject(written)));
    }

    [Fact]
    public void Does_read_multi_document_streams()
    {
        var documents = Yaml.ParseAll("a: 1\n---\n# only a comment\n---\nb: 2\n");
        Assert.Equal(2, documents.Count);
    }

    [Fact]
    public void Does_reject_a_file_with_several_documents_where_one_is_expected()
    {
        Assert.Throws<FormatException>(() => Yaml.ParseObject("a: 1\n---\nb: 2\n"));
    }
}
