using System.Threading.Channels;
using Lowbit.Engine.Tokenization;

namespace Lowbit.Engine.Serving;

/// <summary>One generated token's log-probability and the most likely alternatives (completions' <c>logprobs</c>).</summary>
public sealed record TokenLogprob(string Token, float Logprob, IReadOnlyList<(string Token, float Logprob)> Top, int TextOffset);

/// <summary>A prompt token's log-probability given the tokens before it (null for the first) and the top alternatives there.</summary>
public sealed record PromptLogprob(int Token, float? Logprob, IReadOnlyList<(int Token, float Logprob)> Top);

/// <summary>What a request's consumer receives: text pieces, then one event with the finish reason.</summary>
public sealed record GenerationEvent
{
    public string Text { get; init; } = "";

    public IReadOnlyList<TokenLogprob> Logprobs { get; init; } = [];

    /// <summary>"stop", "length" or "abort" on the last event; null before.</summary>
    public string? FinishReason { get; init; }

    public int PromptTokens { get; init; }

    public int CompletionTokens { get; init; }
}

/// <summary>What a request asks the scheduler for.</summary>
public sealed record RequestOptions
{
    public required IReadOnlyList<int> Prompt { get; init; }

    public required int MaxTokens { get; init; }

    public required SamplingParams Sampling { get; init; }

    public IReadOnlyList<string> Stop { get; init; } = [];

    /// <summary>Token ids that end generation (not part of the text): EOS and the chat format's end-of-turn tokens.</summary>
    public IReadOnlyList<int> StopTokenIds { get; init; } = [];

    public bool IgnoreEos { get; init; }

    /// <summary>The LoRA adapter row (0 = none).</summary>
    public int Adapter { get; init; }

    /// <summary>Top alternatives per prompt token when the prompt's log-probabilities are wanted (completions' echo + logprobs); null for none.</summary>
    public int? PromptLogprobs { get; init; }
}

/// <summary>
/// A request inside the scheduler: its options, its slot and progress, the incremental detokenizer with stop-string
/// hold-back, and the channel its HTTP handler reads. Only the scheduler thread mutates it (besides <see cref="Cancel"/>).
/// </summary>
public sealed class GenerationRequest
{
    private readonly Channel<GenerationEvent> _events = Channel.CreateUnbounded<GenerationEvent>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
    private readonly List<int> _generated = [];
    private readonly List<TokenLogprob> _pendingLogprobs = [];
    private readonly ITextTokenizer _tokenizer;
    private readonly int _holdBack;
    private int _emittedChars;
    private int _textOffset;
    private volatile bool _cancelled;

    public GenerationRequest(RequestOptions options, ITextTokenizer tokenizer, long arrivalTimestamp, Random random)
    {
        Options = options;
        _tokenizer = tokenizer;
        ArrivalTimestamp = arrivalTimestamp;
        Random = random;
        _holdBack = options.Stop.Count == 0 ? 0 : options.Stop.Max(s => s.Length) - 1;
    }

    public RequestOptions Options { get; }

    /// <summary>The prompt's log-probabilities (with <see cref="RequestOptions.PromptLogprobs"/>), complete before the first event.</summary>
    public List<PromptLogprob> PromptLogprobs { get; } = [];

    public long ArrivalTimestamp { get; }

    public Random Random { get; }

    public ChannelReader<GenerationEvent> Events => _events.Reader;

    public int Slot { get; set; } = -1;

    /// <summary>Prompt tokens already in the cache.</summary>
    public int Prefilled { get; set; }

    /// <summary>The token to feed at the next decode step (the last sampled one).</summary>
    public int NextToken { get; set; }

    /// <summary>The cache position the next decode step writes.</summary>
    public int Position => Options.Prompt.Count + _generated.Count - 1;

    public int GeneratedCount => _generated.Count;

    public bool IsPrefilling => Prefilled < Options.Prompt.Count;

    public bool Cancelled => _cancelled;

    public bool Finished { get; private set; }

    public string? FinishReason { get; private set; }

    /// <summary>Called from any thread when the client goes away.</summary>
    public void Cancel() => _cancelled = true;

    /// <summary>Takes a sampled token; returns true when the request is finished.</summary>
    public bool Accept(SampledToken sampled)
    {
        var token = sampled.Token;
        _generated.Add(token);
        NextToken = token;
        string? finish = null;
        var isStopToken = !Options.IgnoreEos && Options.StopTokenIds.Contains(token);
        if (sampled.Logprob is { } logprob && !isStopToken)
        {
            var text = _tokenizer.Decode([token]);
            var top = sampled.Top?.Select(t => (_tokenizer.Decode([t.Token]), t.Logprob)).ToList() ?? [];
            _pendingLogprobs.Add(new TokenLogprob(text, logprob, top, _textOffset));
            _textOffset += text.Length;
        }
        var visible = isStopToken ? _generated.Take(_generated.Count - 1) : _generated;
        var full = _tokenizer.Decode(visible);
        var end = full.Length;
        if (isStopToken)
        {
            finish = "stop";
        }
        if (Options.Stop.Count > 0)
        {
            var from = Math.Max(0, _emittedChars - _holdBack);
            var hit = -1;
            foreach (var stop in Options.Stop)
            {
                var index = full.IndexOf(stop, from, StringComparison.Ordinal);
                if (index >= 0 && (hit < 0 || index < hit))
                {
                    hit = index;
                }
            }
            if (hit >= 0)
            {
                end = hit;
                finish = "stop";
            }
        }
        if (finish is null && _generated.Count >= Options.MaxTokens)
        {
            finish = "length";
        }
        if (finish is null)
        {
            // Hold back a possible stop-string prefix and an incomplete UTF-8 character.
            end = Math.Max(_emittedChars, end - _holdBack);
            while (end > _emittedChars && full[end - 1] == '\uFFFD')
            {
                end--;
            }
        }
        var piece = end > _emittedChars ? full[_emittedChars..end] : "";
        _emittedChars = Math.Max(_emittedChars, end);
        if (piece.Length > 0 || _pendingLogprobs.Count > 0 || finish is not null)
        {
            _events.Writer.TryWrite(new GenerationEvent
            {
                Text = piece,
                Logprobs = _pendingLogprobs.ToArray(),
                FinishReason = finish,
                PromptTokens = Options.Prompt.Count,
                CompletionTokens = _generated.Count,
            });
            _pendingLogprobs.Clear();
        }
        if (finish is not null)
        {
            Complete(finish);
        }
        return finish is not null;
    }

    /// <summary>Ends the request without a token (abort, shutdown, failure).</summary>
    public void Abort(string reason, Exception? error = null)
    {
        if (Finished)
        {
            return;
        }
        if (error is null)
        {
            _events.Writer.TryWrite(new GenerationEvent { FinishReason = reason, PromptTokens = Options.Prompt.Count, CompletionTokens = _generated.Count });
        }
        Finished = true;
        FinishReason = reason;
        _events.Writer.TryComplete(error);
    }

    private void Complete(string reason)
    {
        Finished = true;
        FinishReason = reason;
        _events.Writer.TryComplete();
    }
}
