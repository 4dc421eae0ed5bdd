using System.Text.Json.Nodes;

namespace Lowbit.Engine.Tokenization;

/// <summary>Finds and loads a model folder's tokenizer.</summary>
public static class TokenizerLoader
{
    public static ITextTokenizer Load(string directory)
    {
        var json = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(json))
        {
            var root = JsonNode.Parse(File.ReadAllText(json)) as JsonObject
                ?? throw new EngineInputException($"{json}: not a JSON object");
            if (ByteTokenizer.Describes(root))
            {
                return new ByteTokenizer();
            }
            if (SentencePieceBpeTokenizer.Describes(root))
            {
                return SentencePieceBpeTokenizer.FromTokenizerJson(root, TokenizerConfig.Load(directory));
            }
            return HfTokenizer.FromTokenizerJson(json, root, TokenizerConfig.Load(directory));
        }
        var model = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(model))
        {
            return HfTokenizer.FromSentencePiece(model, TokenizerConfig.Load(directory));
        }
        throw new EngineInputException($"--model: {directory} has neither tokenizer.json nor tokenizer.model");
    }
}
