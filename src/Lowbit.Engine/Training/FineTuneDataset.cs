using System.Text.Json;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Training;

/// <summary>One tokenized example: its ids and, per id, whether the model is trained to predict it.</summary>
public sealed record TrainingExample(int[] Ids, bool[] Trained, int Line);

/// <summary>
/// A packed training sequence of exactly <c>length + 1</c> ids (inputs are ids[..^1], targets ids[1..]).
/// <paramref name="Documents"/> numbers the example each position belongs to (0, 1, ...; the padding tail is one more);
/// null means one document. A token attends only to earlier tokens of its own document, positions restart at 0 in
/// each, and the first token of a document is not a target of the previous one, so a packed block trains exactly as
/// its examples would one by one.
/// </summary>
public sealed record PackedBlock(long[] Ids, bool[] Trained, int[]? Documents = null)
{
    /// <summary>Targets the loss counts.</summary>
    public int TrainedTargets => Enumerable.Range(1, Ids.Length - 1).Count(IsTarget);

    /// <summary>More than one document in the block.</summary>
    public bool IsPacked => Documents is { Length: > 0 } d && d[^1] != d[0];

    /// <summary>Whether position <paramref name="t"/> (≥ 1) is a trained target of position t − 1.</summary>
    public bool IsTarget(int t) => Trained[t] && (Documents is null || Documents[t] == Documents[t - 1]);
}

/// <summary>
/// Reads a fine-tuning dataset and packs it. <c>alpaca</c>: JSONL with <c>instruction</c>, optional <c>input</c>,
/// <c>output</c>, rendered with the Stanford Alpaca prompt, loss on the output and EOS. <c>chat</c>: JSONL with an
/// OpenAI-style <c>messages</c> list, rendered with the model's chat template, loss on the assistant turns.
/// <c>text</c>: JSONL with a <c>text</c> field, or a plain .txt file, loss on every token. Examples are packed
/// greedily into blocks of <c>seq-length</c> (+1 for the shifted targets); an alpaca/chat example never spans two
/// blocks (one longer than the block is an input error), text is cut into consecutive blocks.
/// </summary>
public static class FineTuneDataset
{
    public const string AlpacaWithInput =
        "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{0}\n\n### Input:\n{1}\n\n### Response:\n";

    public const string AlpacaNoInput =
        "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{0}\n\n### Response:\n";

    public static List<TrainingExample> Read(string path, DatasetFormat format, ITextTokenizer tokenizer, ChatFormat chat)
    {
        if (!File.Exists(path))
        {
            throw new EngineInputException($"--dataset: {path} does not exist");
        }
        var examples = new List<TrainingExample>();
        if (format == DatasetFormat.Text && !path.EndsWith(".jsonl", StringComparison.OrdinalIgnoreCase) && !path.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
        {
            var text = File.ReadAllText(path);
            if (text.Trim().Length > 0)
            {
                examples.Add(Document(tokenizer, text, 1));
            }
        }
        else
        {
            var lineNumber = 0;
            foreach (var line in File.ReadLines(path))
            {
                lineNumber++;
                if (string.IsNullOrWhiteSpace(line))
                {
                    continue;
                }
                JsonElement root;
                try
                {
                    using var doc = JsonDocument.Parse(line);
                    root = doc.RootElement.Clone();
                }
                catch (JsonException ex)
                {
                    throw new EngineInputException($"--dataset: line {lineNumber}: not valid JSON ({ex.Message}); each line must be one JSON object");
                }
                if (root.ValueKind != JsonValueKind.Object)
                {
                    throw new EngineInputException($"--dataset: line {lineNumber}: expected a JSON object, got {root.ValueKind}");
                }
                examples.Add(format switch
                {
                    DatasetFormat.Alpaca => Alpaca(tokenizer, root, lineNumber),
                    DatasetFormat.Chat => Chat(tokenizer, root, lineNumber, chat),
                    _ => Document(tokenizer, Field(root, "text", lineNumber, required: true)!, lineNumber),
                });
            }
        }
        if (examples.Count == 0)
        {
            throw new EngineInputException($"--dataset: {path} holds no examples (empty file or only blank lines)");
        }
        return examples;
    }

    /// <summary>Packs examples into blocks of <paramref name="seqLength"/> + 1 ids, padding the tail with <paramref name="pad"/>.</summary>
    public static List<PackedBlock> Pack(IReadOnlyList<TrainingExample> examples, int seqLength, DatasetFormat format, int pad)
    {
        var window = seqLength + 1;
        var blocks = new List<PackedBlock>();
        var ids = new List<long>(window);
        var trained = new List<bool>(window);
        var documents = new List<int>(window);
        void Flush()
        {
            if (ids.Count <= 1)
            {
                ids.Clear();
                trained.Clear();
                documents.Clear();
                return;
            }
            var padDocument = documents.Count == 0 ? 0 : documents[^1] + 1;
            while (ids.Count < window)
            {
                ids.Add(pad);
                trained.Add(false);
                documents.Add(padDocument);
            }
            blocks.Add(new PackedBlock(ids.ToArray(), trained.ToArray(), documents.ToArray()));
            ids.Clear();
            trained.Clear();
            documents.Clear();
        }
        foreach (var example in examples)
        {
            if (format == DatasetFormat.Text)
            {
                for (var i = 0; i < example.Ids.Length; i++)
                {
                    // A text cut at a block edge continues as a new document (position 0) in the next block.
                    documents.Add(documents.Count == 0 ? 0 : i == 0 ? documents[^1] + 1 : documents[^1]);
                    ids.Add(example.Ids[i]);
                    trained.Add(example.Trained[i]);
                    if (ids.Count == window)
                    {
                        Flush();
                    }
                }
                continue;
            }
            if (example.Ids.Length > window)
            {
                throw new EngineInputException($"--dataset: line {example.Line}: the example is {example.Ids.Length} tokens, longer than --seq-length {seqLength} + 1; raise --seq-length or shorten the example");
            }
            if (ids.Count + example.Ids.Length > window)
            {
                Flush();
            }
            var document = documents.Count == 0 ? 0 : documents[^1] + 1;
            ids.AddRange(example.Ids.Select(i => (long)i));
            trained.AddRange(example.Trained);
            documents.AddRange(Enumerable.Repeat(document, example.Ids.Length));
        }
        Flush();
        return blocks;
    }

    private static TrainingExample Document(ITextTokenizer tokenizer, string text, int line)
    {
        var ids = new List<int>();
        if (tokenizer.BosId is { } bos)
        {
            ids.Add(bos);
        }
        ids.AddRange(tokenizer.Encode(text));
        if (tokenizer.EosId is { } eos)
        {
            ids.Add(eos);
        }
        return new TrainingExample(ids.ToArray(), Enumerable.Repeat(true, ids.Count).ToArray(), line);
    }

    private static TrainingExample Alpaca(ITextTokenizer tokenizer, JsonElement root, int line)
    {
        var instruction = Field(root, "instruction", line, required: true)!;
        var input = Field(root, "input", line, required: false);
        var output = Field(root, "output", line, required: true)!;
        var prompt = string.IsNullOrEmpty(input)
            ? string.Format(System.Globalization.CultureInfo.InvariantCulture, AlpacaNoInput, instruction)
            : string.Format(System.Globalization.CultureInfo.InvariantCulture, AlpacaWithInput, instruction, input);
        var builder = new ExampleBuilder(tokenizer, line, addBos: true);
        builder.Add(prompt, trained: false);
        builder.Add(output, trained: true);
        builder.AddEos();
        return builder.Build();
    }

    private static TrainingExample Chat(ITextTokenizer tokenizer, JsonElement root, int line, ChatFormat format)
    {
        if (!root.TryGetProperty("messages", out var list) || list.ValueKind != JsonValueKind.Array || list.GetArrayLength() == 0)
        {
            throw new EngineInputException($"--dataset: line {line}: field 'messages' missing or not a non-empty array of {{\"role\", \"content\"}} objects");
        }
        var messages = new List<ChatMessage>();
        var index = 0;
        foreach (var m in list.EnumerateArray())
        {
            if (m.ValueKind != JsonValueKind.Object
                || !m.TryGetProperty("role", out var role) || role.ValueKind != JsonValueKind.String
                || !m.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String)
            {
                throw new EngineInputException($"--dataset: line {line}: field 'messages[{index}]' needs string 'role' and 'content'");
            }
            var r = role.GetString()!;
            if (r is not ("system" or "user" or "assistant"))
            {
                throw new EngineInputException($"--dataset: line {line}: field 'messages[{index}].role' is '{r}'; accepted: system, user, assistant");
            }
            messages.Add(new ChatMessage(r, content.GetString()!));
            index++;
        }
        if (!messages.Any(m => m.Role == "assistant"))
        {
            throw new EngineInputException($"--dataset: line {line}: field 'messages' has no assistant turn to learn from");
        }
        // Render growing prefixes: the text each message adds is its segment; assistant segments are trained.
        var builder = new ExampleBuilder(tokenizer, line, addBos: format != ChatFormat.Llama3);
        var rendered = "";
        for (var i = 0; i < messages.Count; i++)
        {
            var assistant = messages[i].Role == "assistant";
            if (assistant)
            {
                var prompt = ChatTemplates.Render(format, messages.Take(i).ToList(), addGenerationPrompt: true);
                builder.Add(Suffix(prompt, rendered, line), trained: false);
                rendered = prompt;
            }
            var next = ChatTemplates.Render(format, messages.Take(i + 1).ToList(), addGenerationPrompt: false);
            builder.Add(Suffix(next, rendered, line), trained: assistant);
            rendered = next;
        }
        return builder.Build();
    }

    private static string Suffix(string full, string prefix, int line) =>
        full.StartsWith(prefix, StringComparison.Ordinal)
            ? full[prefix.Length..]
            : throw new EngineInputException($"--dataset: line {line}: the chat template does not render turns incrementally; cannot mask the prompt");

    private static string? Field(JsonElement root, string name, int line, bool required)
    {
        if (!root.TryGetProperty(name, out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return required ? throw new EngineInputException($"--dataset: line {line}: field '{name}' is missing") : null;
        }
        return value.ValueKind == JsonValueKind.String
            ? value.GetString()
            : throw new EngineInputException($"--dataset: line {line}: field '{name}' must be a string, got {value.ValueKind}");
    }

    private sealed class ExampleBuilder(ITextTokenizer tokenizer, int line, bool addBos)
    {
        private readonly List<int> _ids = addBos && tokenizer.BosId is { } bos ? [bos] : [];
        private readonly List<bool> _trained = addBos && tokenizer.BosId is not null ? [false] : [];

        public void Add(string text, bool trained)
        {
            var ids = tokenizer.Encode(text);
            _ids.AddRange(ids);
            _trained.AddRange(Enumerable.Repeat(trained, ids.Count));
        }

        public void AddEos()
        {
            if (tokenizer.EosId is { } eos)
            {
                _ids.Add(eos);
                _trained.Add(true);
            }
        }

        public TrainingExample Build() => new(_ids.ToArray(), _trained.ToArray(), line);
    }
}
