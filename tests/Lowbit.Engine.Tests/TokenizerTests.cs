using System.Text.Json.Nodes;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Tests;

public class TokenizerTests
{
    internal static string FixtureDirectory
    {
        get
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
            {
                dir = dir.Parent;
            }
            return Path.Combine(dir?.FullName ?? throw new InvalidOperationException("repo root not found"), "tests", "fixtures", "tiny-llama");
        }
    }

    [Fact]
    public void Does_round_trip_utf8_when_tokenizing_bytes()
    {
        var tokenizer = new ByteTokenizer();

        var ids = tokenizer.Encode("Ruth: é\n");

        Assert.Equal([82, 117, 116, 104, 58, 32, 0xC3, 0xA9, 10], ids);
        Assert.Equal("Ruth: é\n", tokenizer.Decode(ids.Append(ByteTokenizer.Eos)));
    }

    [Fact]
    public void Does_load_the_fixture_tokenizer_as_byte_level()
    {
        var tokenizer = TokenizerLoader.Load(FixtureDirectory);

        Assert.IsType<ByteTokenizer>(tokenizer);
        Assert.Equal(256, tokenizer.BosId);
        Assert.Equal(260, tokenizer.VocabSize);
        Assert.True(ByteTokenizer.Describes((JsonObject)JsonNode.Parse(ByteTokenizer.TokenizerJson())!));
    }

    [Fact]
    public void Does_merge_byte_level_bpe_tokens_when_reading_a_tokenizer_json()
    {
        using var dir = new TempDir();
        // A GPT-2 style byte-level BPE: "Ġ" is the space byte; merges in both the old string and the new pair format.
        var vocab = new JsonObject();
        string[] tokens = ["h", "e", "l", "o", "Ġ", "w", "r", "d", "he", "ll", "hell", "hello", "Ġw", "Ġwo", "or"];
        for (var i = 0; i < tokens.Length; i++)
        {
            vocab[tokens[i]] = i;
        }
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(new JsonObject { ["id"] = 15, ["content"] = "<|endoftext|>", ["special"] = true }),
            ["pre_tokenizer"] = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false },
            ["decoder"] = new JsonObject { ["type"] = "ByteLevel" },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["vocab"] = vocab,
                ["merges"] = new JsonArray("h e", new JsonArray("l", "l"), "he ll", "hell o", "Ġ w", "Ġw o"),
            },
        };
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());
        File.WriteAllText(dir.File("tokenizer_config.json"), """{"eos_token":"<|endoftext|>","add_bos_token":false}""");

        var tokenizer = TokenizerLoader.Load(dir.Path);
        var ids = tokenizer.Encode("hello world");

        Assert.IsType<HfTokenizer>(tokenizer);
        Assert.Equal([11, 13, 6, 2, 7], ids);
        Assert.Equal("hello world", tokenizer.Decode(ids));
        Assert.Equal(15, tokenizer.EosId);
    }

    [Fact]
    public void Does_encode_sentencepiece_style_bpe_with_byte_fallback()
    {
        using var dir = new TempDir();
        var vocab = new JsonObject { ["<unk>"] = 0, ["<s>"] = 1, ["</s>"] = 2 };
        for (var b = 0; b < 256; b++)
        {
            vocab[$"<0x{b:X2}>"] = 3 + b;
        }
        string[] pieces = ["▁", "H", "i", "t", "h", "e", "r", "▁t", "▁th", "▁the", "er", "▁ther", "▁there", "Hi", "▁Hi"];
        for (var i = 0; i < pieces.Length; i++)
        {
            vocab[pieces[i]] = 259 + i;
        }
        var json = new JsonObject
        {
            ["added_tokens"] = new JsonArray(
                new JsonObject { ["id"] = 1, ["content"] = "<s>", ["special"] = true },
                new JsonObject { ["id"] = 2, ["content"] = "</s>", ["special"] = true }),
            ["normalizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["normalizers"] = new JsonArray(
                    new JsonObject { ["type"] = "Prepend", ["prepend"] = "▁" },
                    new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = " " }, ["content"] = "▁" }),
            },
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["byte_fallback"] = true, ["unk_token"] = "<unk>", ["vocab"] = vocab,
                ["merges"] = new JsonArray("▁ t", "▁t h", "▁th e", "H i", "▁ Hi", "e r", "▁the r", "▁ther e"),
            },
        };
        File.WriteAllText(dir.File("tokenizer.json"), json.ToJsonString());

        var tokenizer = TokenizerLoader.Load(dir.Path);
        var ids = tokenizer.Encode("Hi there\n");

        Assert.IsType<SentencePieceBpeTokenizer>(tokenizer);
        // ▁Hi, ▁there, then "\n" is not in the vocabulary: byte fallback <0x0A> = 3 + 10.
        Assert.Equal([273, 271, 13], ids);
        Assert.Equal("Hi there\n", tokenizer.Decode(ids.Prepend(1)));
        Assert.Equal(1, tokenizer.BosId);
    }

    [Fact]
    public void Does_reject_a_folder_without_tokenizer_files()
    {
        using var dir = new TempDir();

        var ex = Assert.Throws<EngineInputException>(() => TokenizerLoader.Load(dir.Path));

        Assert.Contains("neither tokenizer.json nor tokenizer.model", ex.Message, StringComparison.Ordinal);
    }
}

public class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are terse."),
        new("user", "Hi"),
        new("assistant", "Hello."),
        new("user", "Bye"),
    ];

    [Fact]
    public void Does_render_llama2_with_the_system_block_inside_the_first_inst()
    {
        var text = ChatTemplates.Render(ChatFormat.Llama2, Conversation, addGenerationPrompt: true);

        Assert.Equal("[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]", text);
    }

    [Fact]
    public void Does_render_llama3_headers_and_the_generation_prompt()
    {
        var text = ChatTemplates.Render(ChatFormat.Llama3, Conversation[..2], addGenerationPrompt: true);

        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
            + "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", text);
        Assert.Contains("<|eot_id|>", ChatTemplates.StopStrings(ChatFormat.Llama3));
    }

    [Fact]
    public void Does_render_chatml_when_no_template_is_known()
    {
        var format = ChatTemplates.Detect(null);

        var text = ChatTemplates.Render(format, [new("user", "Hi")], addGenerationPrompt: true);

        Assert.Equal(ChatFormat.ChatMl, format);
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", text);
    }

    [Theory]
    [InlineData("{% for m in messages %}<|start_header_id|>{{ m.role }}{% endfor %}", ChatFormat.Llama3)]
    [InlineData("{{ bos_token + '[INST] ' + content + ' [/INST]' }}", ChatFormat.Llama2)]
    [InlineData("{% for m in messages %}<|im_start|>{{ m.role }}{% endfor %}", ChatFormat.ChatMl)]
    public void Does_detect_the_format_from_a_jinja_template(string template, ChatFormat expected) =>
        Assert.Equal(expected, ChatTemplates.Detect(template));
}
