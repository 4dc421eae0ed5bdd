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
/// LoRA: GGUF adapters (llama.cpp's format, <c>finetune --gguf-adapter true</c>) load through
/// <c>llama_adapter_lora_init</c>; llama.cpp applies adapters per context, so each prefill runs with its request's
/// adapter set and a decode step runs one llama_decode per distinct adapter among its rows (as llama-server splits a
/// batch by LoRA configuration). Row 0 is the base model, row i the i-th loaded adapter.
/// </summary>
public sealed class LlamaCppBackend : IDecodeBackend
{
    private readonly LLamaContext _context;
    private readonly LLamaWeights _weights;
    private readonly List<(string Name, string Path, LoraAdapter Adapter)> _adapters = [];
    private int[] _stepAdapters = [];
    private int _prefillAdapter;
    private int _applied;

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
        _weights = weights;
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

    /// <summary>The loaded adapters (row i + 1 is the i-th).</summary>
    public IReadOnlyList<(string Name, string Path)> Adapters => _adapters.Select(a => (a.Name, a.Path)).ToArray();

    /// <summary>The adapter row of <paramref name="name"/> (1-based), or null.</summary>
    public int? RowOf(string name)
    {
        var index = _adapters.FindIndex(a => a.Name == name);
        return index < 0 ? null : index + 1;
    }

    /// <summary>
    /// Loads a llama.cpp LoRA adapter: a <c>.gguf</c> adapter file, or a folder holding <c>adapter.gguf</c> (what
    /// <c>finetune --gguf-adapter true</c> writes next to the PEFT files). Returns its row.
    /// </summary>
    public int LoadAdapter(string name, string path)
    {
        var file = AdapterFile(name, path);
        if (RowOf(name) is not null)
        {
            throw new EngineInputException($"--adapters: the name '{name}' is given twice");
        }
        LoraAdapter adapter;
        try
        {
            adapter = _weights.NativeHandle.LoadLoraFromFile(file);
        }
        catch (Exception ex) when (ex is not EngineInputException)
        {
            throw new EngineInputException($"--adapters: {name}: llama.cpp could not load {file} as a LoRA adapter of this model ({ex.Message}); it must be a GGUF adapter (general.type adapter) for the same architecture and shapes");
        }
        _adapters.Add((name, path, adapter));
        return _adapters.Count;
    }

    /// <summary>The GGUF adapter file of an <c>--adapters</c> entry.</summary>
    public static string AdapterFile(string name, string path)
    {
        if (File.Exists(path))
        {
            return path.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase) ? path
                : throw new EngineInputException($"--adapters: {name}: {path} is not a .gguf file; a GGUF model takes llama.cpp LoRA adapters (.gguf, general.type adapter)");
        }
        var inFolder = Path.Combine(path, "adapter.gguf");
        return File.Exists(inFolder) ? inFolder
            : throw new EngineInputException($"--adapters: {name}: {path} holds no adapter.gguf; a GGUF model takes llama.cpp LoRA adapters: write one with finetune --gguf-adapter true, or pass the .gguf adapter file");
    }

    /// <summary>The adapter row of every row of the next <see cref="Step"/> (the scheduler's BeforeStep).</summary>
    public void SelectAdapters(int[] rows) => _stepAdapters = rows;

    /// <summary>The adapter row of the next <see cref="Prefill(int, IReadOnlyList{int}, int)"/> (the scheduler's BeforePrefill).</summary>
    public void SelectPrefillAdapter(int row) => _prefillAdapter = row;

    private void Apply(int row)
    {
        if (row == _applied)
        {
            return;
        }
        if (row < 0 || row > _adapters.Count)
        {
            throw new InvalidOperationException($"adapter row {row} is not loaded ({_adapters.Count} adapters)");
        }
        if (row == 0)
        {
            _context.NativeHandle.SetLoraAdapters([]);
        }
        else
        {
            _context.NativeHandle.SetLoraAdapters([(_adapters[row - 1].Adapter, 1f)]);
        }
        _applied = row;
    }

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
        Apply(_prefillAdapter);
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
        var logits = new float[rows * _vocab];
        int AdapterOf(int r) => r < _stepAdapters.Length ? _stepAdapters[r] : 0;
        var active = Enumerable.Range(0, rows).Where(r => positions[r] != ScratchPosition).ToList();
        // One llama_decode per adapter among the rows (llama.cpp sets adapters per context).
        foreach (var group in active.GroupBy(AdapterOf).OrderBy(g => g.Key))
        {
            Apply(group.Key);
            _batch.Clear();
            var members = group.ToList();
            foreach (var r in members)
            {
                _batch.Add((int)tokens[r], (int)positions[r], (LLamaSeqId)r, true);
            }
            Decode();
            for (var i = 0; i < members.Count; i++)
            {
                _context.NativeHandle.GetLogitsIth(i).CopyTo(logits.AsSpan(members[i] * _vocab, _vocab));
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
