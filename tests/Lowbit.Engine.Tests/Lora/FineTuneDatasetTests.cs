using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tokenization;
using Lowbit.Engine.Training;

namespace Lowbit.Engine.Tests.Lora;

public sealed class FineTuneDatasetTests
{
    private static readonly ByteTokenizer Tokenizer = new();

    private static string Write(TempDir dir, string name, string content)
    {
        var path = dir.File(name);
        File.WriteAllText(path, content);
        return path;
    }

    private static string TrainedText(TrainingExample e) =>
        Tokenizer.Decode(e.Ids.Where((_, i) => e.Trained[i] && e.Ids[i] < 256));

    [Fact]
    public void Does_train_only_on_the_alpaca_output_and_eos()
    {
        using var dir = new TempDir();
        var path = Write(dir, "a.jsonl", """{"instruction": "Say hi", "input": "to Ann", "output": "Hi Ann!"}""" + "\n");

        var example = Assert.Single(FineTuneDataset.Read(path, DatasetFormat.Alpaca, Tokenizer, ChatFormat.ChatMl));

        Assert.Equal(ByteTokenizer.Bos, example.Ids[0]);
        Assert.Equal(ByteTokenizer.Eos, example.Ids[^1]);
        Assert.True(example.Trained[^1]);
        Assert.Equal("Hi Ann!", TrainedText(example));
        Assert.Contains("### Input:\nto Ann", Tokenizer.Decode(example.Ids.Where(i => i < 256)), StringComparison.Ordinal);
    }

    [Fact]
    public void Does_train_only_on_assistant_turns_of_a_chat()
    {
        using var dir = new TempDir();
        var path = Write(dir, "c.jsonl",
            """{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6"}]}""");

        var example = Assert.Single(FineTuneDataset.Read(path, DatasetFormat.Chat, Tokenizer, ChatFormat.ChatMl));

        Assert.Equal("4<|im_end|>\n6<|im_end|>\n", TrainedText(example));
        Assert.StartsWith("<|im_start|>system\nBe brief.", Tokenizer.Decode(example.Ids.Where(i => i < 256)), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("{\"instruction\": \"a\", \"output\": \"b\"}\n{not json\n", "line 2", "not valid JSON")]
    [InlineData("{\"instruction\": \"a\"}\n", "line 1", "'output'")]
    [InlineData("{\"instruction\": \"a\", \"output\": 5}\n", "line 1", "'output' must be a string")]
    [InlineData("\n\n", "no examples", "empty")]
    [InlineData("[1, 2]\n", "line 1", "JSON object")]
    public void Does_name_the_line_and_field_of_bad_alpaca_input(string content, string where, string what)
    {
        using var dir = new TempDir();
        var path = Write(dir, "bad.jsonl", content);

        var ex = Assert.Throws<EngineInputException>(() => FineTuneDataset.Read(path, DatasetFormat.Alpaca, Tokenizer, ChatFormat.ChatMl));

        Assert.Contains(where, ex.Message, StringComparison.Ordinal);
        Assert.Contains(what, ex.Message, StringComparison.Ordinal);
        Assert.StartsWith("--dataset", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_a_chat_line_without_assistant_turn_or_with_a_bad_role()
    {
        using var dir = new TempDir();
        var noAssistant = Write(dir, "n.jsonl", """{"messages": [{"role": "user", "content": "hi"}]}""");
        var badRole = Write(dir, "r.jsonl", """{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}""");

        Assert.Contains("assistant", Assert.Throws<EngineInputException>(() => FineTuneDataset.Read(noAssistant, DatasetFormat.Chat, Tokenizer, ChatFormat.ChatMl)).Message, StringComparison.Ordinal);
        Assert.Contains("messages[0].role", Assert.Throws<EngineInputException>(() => FineTuneDataset.Read(badRole, DatasetFormat.Chat, Tokenizer, ChatFormat.ChatMl)).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_an_example_longer_than_the_sequence_length()
    {
        using var dir = new TempDir();
        var path = Write(dir, "l.jsonl", "{\"instruction\": \"x\", \"output\": \"short\"}\n" + "{\"instruction\": \"" + new string('y', 400) + "\", \"output\": \"z\"}\n");
        var examples = FineTuneDataset.Read(path, DatasetFormat.Alpaca, Tokenizer, ChatFormat.ChatMl);

        var ex = Assert.Throws<EngineInputException>(() => FineTuneDataset.Pack(examples, 256, DatasetFormat.Alpaca, ByteTokenizer.Pad));

        Assert.Contains("line 2", ex.Message, StringComparison.Ordinal);
        Assert.Contains("--seq-length 256", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_pack_examples_whole_and_cut_text_into_consecutive_blocks()
    {
        using var dir = new TempDir();
        var jsonl = Write(dir, "p.jsonl", string.Concat(Enumerable.Range(0, 5).Select(i => $"{{\"instruction\": \"q{i}\", \"output\": \"answer {i}\"}}\n")));
        var txt = Write(dir, "t.txt", new string('a', 100));
        var examples = FineTuneDataset.Read(jsonl, DatasetFormat.Alpaca, Tokenizer, ChatFormat.ChatMl);

        var packed = FineTuneDataset.Pack(examples, 256, DatasetFormat.Alpaca, ByteTokenizer.Pad);
        var text = FineTuneDataset.Pack(FineTuneDataset.Read(txt, DatasetFormat.Text, Tokenizer, ChatFormat.ChatMl), 32, DatasetFormat.Text, ByteTokenizer.Pad);

        Assert.All(packed, b => Assert.Equal(257, b.Ids.Length));
        Assert.Equal(examples.Sum(e => e.Ids.Length), packed.Sum(b => b.Ids.Count(i => i != ByteTokenizer.Pad)));
        Assert.Equal(examples.Sum(e => e.Trained.Count(t => t)), packed.Sum(b => b.Trained.Count(t => t)));
        Assert.Equal(4, text.Count);   // BOS + 100 bytes + EOS = 102 ids in blocks of 33
        Assert.Equal(ByteTokenizer.Bos, text[0].Ids[0]);
        Assert.All(text[3].Ids.Skip(3), id => Assert.Equal(ByteTokenizer.Pad, id));
    }
}
