using System.Text;
using LLama;
using LLama.Common;
using LLama.Native;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>
/// The GGUF path of <c>serve</c>: llama.cpp through LLamaSharp's low-level API, behind the same
/// <see cref="ServeScheduler"/> as the TorchSharp path. One llama.cpp context with one sequence per slot
/// (<c>n_seq_max</c> = max-concurrency, <c>n_ctx</c> = max-context × max-concurrency): a prefill chunk is one
/// llama_decode of one sequence, a decode step one llama_decode with one token of every running sequence, so
/// requests join and leave between steps (continuous batching). The logits come back to the host and go through the
/// same <see cref="Sampler"/>; a new request in a slot first removes that sequence's cached positions.
/// </summary>
public sealed class LlamaCppBackend : IDecodeBackend
{
    private readonly LLamaContext _context;

    // llama.cpp logs every tensor and graph at info level; keep warnings and errors (on stderr, like the engine's
    // log). The delegate lives in a static field so the native side never calls a collected one.
    private static readonly Lock LogLock = new();
    private static NativeLogConfig.LLamaLogCallback? _log;

    private readonly LLamaBatch _batch = new();
    private readonly int _vocab;

    public LlamaCppBackend(LLamaWeights weights, string path, int slots, int maxContext, int prefillChunk)
    {
        Slots = slots;
        MaxContext = maxContext;
        _vocab = weights.Vocab.Count;
        var parameters = ContextParameters(path, slots, maxContext, prefillChunk);
        _context = weights.CreateContext(parameters);
        var layers = weights.NativeHandle.LayerCount;
        var kvWidth = (long)weights.NativeHandle.KVHeadCount * (weights.EmbeddingSize / Math.Max(1, weights.NativeHandle.HeadCount));
        CacheBytes = 2L * layers * kvWidth * slots * maxContext * 2; // K and V, f16
    }

    private static void InstallLog()
    {
        lock (LogLock)
        {
            if (_log is not null)
            {
                return;
            }
            _log = (level, message) =>
            {
                if (level is LLamaLogLevel.Warning or LLamaLogLevel.Error)
                {
                    Console.Error.Write($"llama.cpp: {message}");
                }
            };
            NativeLogConfig.llama_log_set(_log);
        }
    }

    /// <summary>The context parameters for <paramref name="slots"/> sequences of <paramref name="maxContext"/> positions.</summary>
    public static ModelParams ContextParameters(string path, int slots, int maxContext, int prefillChunk)
    {
        InstallLog();
        return new ModelParams(path)
        {
            ContextSize = (uint)(slots * maxContext),
            SeqMax = (uint)slots,
            BatchSize = (uint)Math.Max(prefillChunk, slots),
            UBatchSize = (uint)Math.Max(prefillChunk, slots),
            Threads = Environment.ProcessorCount,
            BatchThreads = Environment.ProcessorCount,
            GpuLayerCount = 0,
        };
    }

    public int Slots { get; }

    public int MaxContext { get; }

    public long CacheBytes { get; }

    public int ScratchPosition => MaxContext;

    public Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start)
    {
        if (start + tokens.Count > MaxContext)
        {
            throw new InvalidOperationException($"slot {slot}: {start} + {tokens.Count} positions exceed the context of {MaxContext}");
        }
        var sequence = (LLamaSeqId)slot;
        if (start == 0)
        {
            _context.NativeHandle.MemorySequenceRemove(sequence, 0, -1);
        }
        _batch.Clear();
        for (var i = 0; i < tokens.Count; i++)
        {
            _batch.Add(tokens[i], start + i, sequence, i == tokens.Count - 1);
        }
        Decode();
        return tensor(_context.NativeHandle.GetLogitsIth(tokens.Count - 1).ToArray());
    }

    public Tensor Step(long[] tokens, long[] positions, int rows, int attend)
    {
        _batch.Clear();
        var index = new int[rows];
        var used = 0;
        for (var r = 0; r < rows; r++)
        {
            if (positions[r] == ScratchPosition)
            {
                index[r] = -1;
                continue;
            }
            index[r] = used++;
            _batch.Add((int)tokens[r], (int)positions[r], (LLamaSeqId)r, true);
        }
        var logits = new float[rows * _vocab];
        if (used > 0)
        {
            Decode();
            for (var r = 0; r < rows; r++)
            {
                if (index[r] >= 0)
                {
                    _context.NativeHandle.GetLogitsIth(index[r]).CopyTo(logits.AsSpan(r * _vocab, _vocab));
                }
            }
        }
        return tensor(logits, [rows, _vocab]);
    }

    private void Decode()
    {
        var result = _context.NativeHandle.Decode(_batch);
        if (result != DecodeResult.Ok)
        {
            throw new InvalidOperationException($"llama_decode failed: {result}");
        }
    }

    public void Dispose() => _context.Dispose();
}

/// <summary>llama.cpp's tokenizer of a GGUF file (its tokenizer.ggml.* metadata) as an <see cref="ITextTokenizer"/>.</summary>
public sealed class LlamaCppTokenizer : ITextTokenizer
{
    private readonly LLamaWeights _weights;
    private readonly byte[][] _pieces;

    public LlamaCppTokenizer(LLamaWeights weights)
    {
        _weights = weights;
        VocabSize = weights.Vocab.Count;
        BosId = weights.Vocab.BOS is { } bos ? (int)bos : null;
        EosId = weights.Vocab.EOS is { } eos ? (int)eos : null;
        _pieces = new byte[VocabSize][];
        Span<byte> buffer = stackalloc byte[256];
        for (var id = 0; id < VocabSize; id++)
        {
            var n = (int)weights.NativeHandle.TokenToSpan(id, buffer, 0, false);
            _pieces[id] = n > 0 ? buffer[..Math.Min(n, buffer.Length)].ToArray() : [];
        }
    }

    public int VocabSize { get; }

    public int? BosId { get; }

    public int? EosId { get; }

    public IReadOnlyList<int> Encode(string text) =>
        text.Length == 0 ? [] : _weights.Tokenize(text, false, false, Encoding.UTF8).Select(t => (int)t).ToArray();

    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id >= 0 && id < _pieces.Length)
            {
                bytes.AddRange(_pieces[id]);
            }
        }
        return Encoding.UTF8.GetString(bytes.ToArray());
    }
}
