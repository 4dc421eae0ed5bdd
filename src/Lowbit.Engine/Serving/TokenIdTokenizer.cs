using System.Globalization;
using System.Text;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Serving;

/// <summary>
/// The tokenizer of a model folder without tokenizer files (e.g. random benchmark weights): prompts must be token
/// ids (completions' <c>prompt: [ids]</c>), and each generated id reads back as <c>" &lt;id&gt;"</c>.
/// </summary>
public sealed class TokenIdTokenizer(int vocabSize, int? bos, int? eos) : ITextTokenizer
{
    public int VocabSize => vocabSize;

    public int? BosId => bos;

    public int? EosId => eos;

    public IReadOnlyList<int> Encode(string text) =>
        throw OpenAiError.BadField("prompt", "this model folder has no tokenizer; send the prompt as an array of token ids");

    public string Decode(IEnumerable<int> ids)
    {
        var text = new StringBuilder();
        foreach (var id in ids)
        {
            text.Append(' ').Append(id.ToString(CultureInfo.InvariantCulture));
        }
        return text.ToString();
    }
}
