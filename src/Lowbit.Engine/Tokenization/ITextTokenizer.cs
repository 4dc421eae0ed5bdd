namespace Lowbit.Engine.Tokenization;

/// <summary>What the engine needs from a tokenizer: text ↔ ids and the special ids.</summary>
public interface ITextTokenizer
{
    int VocabSize { get; }

    int? BosId { get; }

    int? EosId { get; }

    /// <summary>Ids of <paramref name="text"/> without special tokens.</summary>
    IReadOnlyList<int> Encode(string text);

    string Decode(IEnumerable<int> ids);
}
