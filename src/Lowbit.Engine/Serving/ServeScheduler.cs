using System.Collections.Concurrent;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>Scheduler limits: the slab's shape and how much prompt one iteration may prefill.</summary>
public sealed record SchedulerOptions
{
    public required int MaxConcurrency { get; init; }

    public required int MaxContext { get; init; }

    /// <summary>
    /// Prompt tokens prefilled per iteration (over all prefilling requests) before the next decode step: the
    /// server's <c>--max-num-batched-tokens</c>.
    /// </summary>
    public int PrefillChunk { get; init; } = PrefillBudgets.Cpu;
}

/// <summary>What the load-time warm-up ran (<see cref="ServeScheduler.WarmUpAsync"/>).</summary>
public sealed record WarmUpResult
{
    /// <summary>Dummy prompt tokens in the one batched prefill (the budget, or every slot's whole context when smaller).</summary>
    public required int PrefillTokens { get; init; }

    /// <summary>Slots the prefill spread over (chunks of up to the context each).</summary>
    public required int PrefillChunks { get; init; }

    /// <summary>Rows of the decode step (every slot).</summary>
    public required int DecodeRows { get; init; }

    public required double Seconds { get; init; }
}

/// <summary>
/// Continuous batching on one thread that owns every tensor: requests wait in FIFO order for a free slot of the
/// <see cref="IDecodeBackend"/>; each iteration admits waiting requests into free slots, prefills up to
/// <see cref="SchedulerOptions.PrefillChunk"/> prompt tokens over the prefilling requests, oldest first (in one
/// forward when the backend batches prefill, so a long prompt is spread over several iterations while the running
/// requests keep decoding), runs one decode step over every decoding slot, samples on the device and hands the
/// tokens to the requests. Cancelled requests leave at the next iteration and free their slot.
/// </summary>
public sealed class ServeScheduler : IDisposable
{
    private readonly IDecodeBackend _batch;
    private readonly ITextTokenizer _tokenizer;
    private readonly SchedulerOptions _options;
    private readonly ServeMetrics _metrics;
    private readonly TimeProvider _time;
    private readonly ConcurrentQueue<GenerationRequest> _incoming = new();
    private readonly ConcurrentQueue<(Action Action, TaskCompletionSource Done)> _work = new();
    private readonly LinkedList<GenerationRequest> _waiting = new();
    private readonly GenerationRequest?[] _slots;
    private readonly SemaphoreSlim _signal = new(0);
    private readonly Thread _thread;
    private readonly Random _serverRandom = new();
    private readonly Action<Exception> _onFailure;
    private volatile bool _stopping;
    private volatile bool _stopped;
    private int _inFlight;

    public ServeScheduler(IDecodeBackend batch, ITextTokenizer tokenizer, SchedulerOptions options, ServeMetrics metrics, TimeProvider time, Action<Exception> onFailure)
    {
        _batch = batch;
        _tokenizer = tokenizer;
        _options = options;
        _metrics = metrics;
        _time = time;
        _onFailure = onFailure;
        _slots = new GenerationRequest?[batch.Slots];
        _thread = new Thread(Loop) { IsBackground = true, Name = "lowbit-serve-scheduler" };
        _thread.Start();
    }

    /// <summary>Called before each decode step with the adapter row of every batch row (LoRA); null when no adapters.</summary>
    public Action<int[]>? BeforeStep { get; init; }

    /// <summary>Called before each prefill chunk with the request's adapter row.</summary>
    public Action<int>? BeforePrefill { get; init; }

    /// <summary>Requests admitted or waiting and not yet finished.</summary>
    public int InFlight => Volatile.Read(ref _inFlight);

    public GenerationRequest Submit(RequestOptions options)
    {
        if (_stopping)
        {
            throw new InvalidOperationException("the server is shutting down");
        }
        var random = options.Sampling.Seed is { } seed ? new Random(unchecked((int)seed ^ (int)(seed >> 32))) : NextRandom();
        var request = new GenerationRequest(options, _tokenizer, _time.GetTimestamp(), random);
        Interlocked.Increment(ref _inFlight);
        _incoming.Enqueue(request);
        _signal.Release();
        return request;
    }

    /// <summary>Runs <paramref name="action"/> on the scheduler's thread between steps (adapter loads touch the model).</summary>
    public Task RunOnLoop(Action action)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _work.Enqueue((action, done));
        _signal.Release();
        return done.Task;
    }

    /// <summary>Called after each part of the warm-up with its name (serve's per-phase memory report, opt-in).</summary>
    public Action<string>? WarmUpPhase { get; set; }

    /// <summary>
    /// The load-time warm-up (vLLM's profile run), on the scheduler's thread before any request: one prefill at the
    /// full budget's shape on dummy tokens (spread over as many slots as it takes; all positions' logits and their
    /// log-softmax and top-k, as prompt log-probabilities need, then once more with the last positions only, as plain
    /// requests run it), one decode step over every slot, the sampler (greedy and sampled rows with log-probabilities),
    /// then <see cref="IDecodeBackend.ClearSlots"/>. The first requests then pay no first-time costs (kernel loads,
    /// GEMM heuristics, the thread's BLAS handle, the caching allocator growing to its peak), and the process's memory
    /// peak is reached before <c>/ready</c>. No request state or metric is touched.
    /// </summary>
    public async Task<WarmUpResult> WarmUpAsync()
    {
        WarmUpResult? result = null;
        await RunOnLoop(() => result = WarmUp()).ConfigureAwait(false);
        return result!;
    }

    private WarmUpResult WarmUp()
    {
        if (_slots.Any(s => s is not null) || _waiting.Count > 0)
        {
            throw new InvalidOperationException("the warm-up runs before the first request");
        }
        var start = _time.GetTimestamp();
        var length = Math.Min(_batch.MaxContext, _options.PrefillChunk);
        var total = (int)Math.Min(_options.PrefillChunk, (long)_batch.Slots * length);
        var vocab = Math.Max(1, _tokenizer.VocabSize);
        var chunks = new List<PrefillChunk>();
        for (var offset = 0; offset < total; offset += length)
        {
            var count = Math.Min(length, total - offset);
            chunks.Add(new PrefillChunk
            {
                Slot = chunks.Count,
                Tokens = Enumerable.Range(offset, count).Select(i => i % vocab).ToArray(),
                Start = 0,
                AllPositions = _batch.BatchesPrefill,
            });
        }
        using (var scope = NewDisposeScope())
        {
            var logits = _batch.Prefill(chunks);
            WarmUpPhase?.Invoke(_batch.BatchesPrefill ? "prefill, every position's logits" : "prefill");
            if (_batch.BatchesPrefill)
            {
                // The prompt log-probabilities' work on every position, sliced as for requests (PromptLogprobs; the
                // peak: 16-bit logits of the whole budget plus one slice's fp32 log-softmax). Taken over the whole
                // budget at once it held ~3.8 GiB at 2,048 × 32,000 on the H200 (docs/planner.md).
                var targets = Enumerable.Range(0, (int)logits.shape[0]).Select(i => i % vocab).ToArray();
                _ = PromptLogprobs(logits, targets, Math.Min(Sampler.MaxLogprobs, (int)logits.shape[1]));
                WarmUpPhase?.Invoke("prompt log-probabilities");
                logits = _batch.Prefill(chunks.Select(c => c with { AllPositions = false }).ToList());
                WarmUpPhase?.Invoke("prefill, last positions' logits");
            }
            Sampler.Sample(logits, WarmUpDraws(chunks.Count));
            WarmUpPhase?.Invoke("sampler after the prefill");
        }
        var rows = _batch.Slots;
        using (var scope = NewDisposeScope())
        {
            var positions = Enumerable.Repeat((long)_batch.ScratchPosition, rows).ToArray();
            BeforeStep?.Invoke(new int[rows]);
            var logits = _batch.Step(new long[rows], positions, rows, _batch.MaxContext);
            WarmUpPhase?.Invoke("decode step");
            Sampler.Sample(logits, WarmUpDraws(rows));
            WarmUpPhase?.Invoke("sampler after the decode step");
        }
        _batch.ClearSlots();
        return new WarmUpResult { PrefillTokens = total, PrefillChunks = chunks.Count, DecodeRows = rows, Seconds = _time.GetElapsedTime(start).TotalSeconds };
    }

    /// <summary>A greedy first row, then sampled rows with top-k, top-p and log-probabilities (every branch of the sampler).</summary>
    private static (SamplingParams, double)?[] WarmUpDraws(int rows) =>
        Enumerable.Range(0, rows).Select(i => ((SamplingParams, double)?)(i == 0
            ? (new SamplingParams { Temperature = 0, Logprobs = 1 }, 0)
            : (new SamplingParams { Temperature = 0.8, TopP = 0.9, TopK = 40, Logprobs = 5 }, 0.5))).ToArray();

    /// <summary>Wakes the loop (a request was cancelled).</summary>
    public void Poke() => _signal.Release();

    private Random NextRandom()
    {
        lock (_serverRandom)
        {
            return new Random(_serverRandom.Next());
        }
    }

    private void Loop()
    {
        try
        {
            using var noGrad = no_grad();
            while (!_stopped)
            {
                Drain();
                if (_slots.All(s => s is null) && _waiting.Count == 0)
                {
                    Publish();
                    _signal.Wait(TimeSpan.FromMilliseconds(200));
                    continue;
                }
                Admit();
                Publish();
                PrefillSome();
                DecodeStep();
                Publish();
            }
        }
        catch (Exception ex)
        {
            foreach (var request in _slots.Concat(_waiting).OfType<GenerationRequest>())
            {
                request.Abort("error", ex);
            }
            _onFailure(ex);
        }
    }

    private void Drain()
    {
        while (_work.TryDequeue(out var item))
        {
            try
            {
                item.Action();
                item.Done.SetResult();
            }
            catch (Exception ex)
            {
                item.Done.SetException(ex);
            }
        }
        while (_incoming.TryDequeue(out var request))
        {
            _waiting.AddLast(request);
        }
        for (var node = _waiting.First; node is not null;)
        {
            var next = node.Next;
            if (node.Value.Cancelled)
            {
                Finish(node.Value, null);
                _waiting.Remove(node);
            }
            node = next;
        }
        for (var i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] is { Cancelled: true } request)
            {
                Finish(request, i);
            }
        }
    }

    private void Admit()
    {
        for (var i = 0; i < _slots.Length && _waiting.First is { } first; i++)
        {
            if (_slots[i] is null)
            {
                _waiting.RemoveFirst();
                first.Value.Slot = i;
                _slots[i] = first.Value;
            }
        }
    }

    private void PrefillSome()
    {
        var budget = _options.PrefillChunk;
        var chunks = new List<(GenerationRequest Request, PrefillChunk Chunk)>();
        // Oldest first: the slot order is not arrival order, so sort by arrival.
        foreach (var request in _slots.OfType<GenerationRequest>().Where(r => r.IsPrefilling).OrderBy(r => r.ArrivalTimestamp))
        {
            if (budget <= 0)
            {
                break;
            }
            var prompt = request.Options.Prompt;
            var length = Math.Min(budget, prompt.Count - request.Prefilled);
            budget -= length;
            chunks.Add((request, new PrefillChunk
            {
                Slot = request.Slot,
                Tokens = prompt.Skip(request.Prefilled).Take(length).ToArray(),
                Start = request.Prefilled,
                Adapter = request.Options.Adapter,
                AllPositions = request.Options.PromptLogprobs is not null && _batch.BatchesPrefill,
            }));
        }
        if (chunks.Count == 0)
        {
            return;
        }
        using var scope = NewDisposeScope();
        Tensor logits;
        if (_batch.BatchesPrefill)
        {
            // One forward over every chunk of this iteration (each row with its request's adapter).
            logits = _batch.Prefill(chunks.Select(c => c.Chunk).ToList());
        }
        else
        {
            logits = stack(chunks.Select(c =>
            {
                BeforePrefill?.Invoke(c.Chunk.Adapter);
                return _batch.Prefill(c.Chunk.Slot, c.Chunk.Tokens, c.Chunk.Start);
            }).ToArray());
        }
        var done = new List<(GenerationRequest Request, int Row)>();
        var row = 0;
        for (var i = 0; i < chunks.Count; i++)
        {
            var (request, chunk) = chunks[i];
            if (chunk.AllPositions)
            {
                RecordPromptLogprobs(request, chunk, logits.narrow(0, row, chunk.Tokens.Count));
                row += chunk.Tokens.Count - 1;
            }
            request.Prefilled += chunk.Tokens.Count;
            _metrics.AddPromptTokens(chunk.Tokens.Count);
            if (!request.IsPrefilling && request.Options.MaxTokens == 0)
            {
                // Echo-only scoring (max_tokens 0): the prompt and its log-probabilities are the answer.
                request.Abort("length");
                Finish(request, request.Slot);
            }
            else if (!request.IsPrefilling)
            {
                done.Add((request, row));
            }
            row++;
        }
        if (done.Count > 0)
        {
            // The requests whose prompt is complete sample their first token (one host read for all of them).
            var rows = logits.index_select(0, tensor(done.Select(d => (long)d.Row).ToArray(), device: logits.device)).to(ScalarType.Float32);
            var sampled = Sampler.Sample(rows, done.Select(d => ((SamplingParams, double)?)(d.Request.Options.Sampling, d.Request.Random.NextDouble())).ToArray());
            for (var i = 0; i < done.Count; i++)
            {
                Deliver(done[i].Request, sampled[i]!);
            }
        }
    }

    /// <summary>
    /// The log-probability of each prompt token of <paramref name="chunk"/> after the tokens before it (position p's
    /// logits predict token p + 1; the first prompt token has none), with the request's top alternatives.
    /// </summary>
    private static void RecordPromptLogprobs(GenerationRequest request, PrefillChunk chunk, Tensor logits)
    {
        var prompt = request.Options.Prompt;
        if (chunk.Start == 0)
        {
            request.PromptLogprobs.Add(new PromptLogprob(prompt[0], null, []));
        }
        var count = Math.Min(chunk.Tokens.Count, prompt.Count - 1 - chunk.Start);
        if (count <= 0)
        {
            return;
        }
        var k = Math.Min(request.Options.PromptLogprobs ?? 0, Sampler.MaxLogprobs);
        var targets = prompt.Skip(chunk.Start + 1).Take(count).ToArray();
        var scored = PromptLogprobs(logits.narrow(0, 0, count), targets, k);
        for (var i = 0; i < count; i++)
        {
            request.PromptLogprobs.Add(new PromptLogprob(targets[i], scored[i].Chosen, scored[i].Top));
        }
    }

    /// <summary>
    /// Each row's log-probability of its target and its <paramref name="k"/> most likely ids, in slices of
    /// <see cref="PromptLogprobSlice"/> rows: the fp32 log-softmax of a whole 2,048-token chunk would be 8 B × vocabulary
    /// per position on top of the 16-bit logits (the planner counts one slice: MemoryEstimator.LogitsBytes).
    /// </summary>
    private static List<(float Chosen, (int Id, float Logprob)[] Top)> PromptLogprobs(Tensor logits, IReadOnlyList<int> targets, int k)
    {
        var scored = new List<(float, (int, float)[])>(targets.Count);
        for (var first = 0; first < targets.Count; first += PromptLogprobSlice)
        {
            using var scope = NewDisposeScope();
            var rows = Math.Min(PromptLogprobSlice, targets.Count - first);
            var logSoftmax = logits.narrow(0, first, rows).to(ScalarType.Float32).log_softmax(-1);
            var ids = tensor(targets.Skip(first).Take(rows).Select(t => (long)t).ToArray(), device: logits.device);
            var chosen = logSoftmax.gather(1, ids.view(rows, 1)).view(rows).cpu().data<float>().ToArray();
            float[] topValues = [];
            long[] topIds = [];
            if (k > 0)
            {
                var (values, indices) = logSoftmax.topk(k, -1);
                topValues = values.cpu().data<float>().ToArray();
                topIds = indices.cpu().data<long>().ToArray();
            }
            for (var i = 0; i < rows; i++)
            {
                scored.Add((chosen[i], Enumerable.Range(0, k).Select(j => ((int)topIds[(i * k) + j], topValues[(i * k) + j])).ToArray()));
            }
        }
        return scored;
    }

    /// <summary>Prompt positions whose log-probabilities are computed together (<see cref="RecordPromptLogprobs"/>).</summary>
    public const int PromptLogprobSlice = 256;

    private void DecodeStep()
    {
        var rows = 0;
        var attend = 0;
        for (var i = 0; i < _slots.Length; i++)
        {
            if (_slots[i] is { IsPrefilling: false, Finished: false } request)
            {
                rows = i + 1;
                attend = Math.Max(attend, request.Position + 1);
            }
        }
        if (rows == 0)
        {
            return;
        }
        // Round the attended length up so its shape changes rarely; the mask hides what is beyond each row.
        attend = Math.Min(_batch.MaxContext, ((attend + 63) / 64) * 64);
        var tokens = new long[rows];
        var positions = new long[rows];
        var adapters = new int[rows];
        var draws = new (SamplingParams, double)?[rows];
        for (var i = 0; i < rows; i++)
        {
            if (_slots[i] is { IsPrefilling: false, Finished: false } request)
            {
                tokens[i] = request.NextToken;
                positions[i] = request.Position;
                adapters[i] = request.Options.Adapter;
                draws[i] = (request.Options.Sampling, request.Options.Sampling.Temperature > 0 ? request.Random.NextDouble() : 0);
            }
            else
            {
                positions[i] = _batch.ScratchPosition;
            }
        }
        BeforeStep?.Invoke(adapters);
        using var scope = NewDisposeScope();
        var logits = _batch.Step(tokens, positions, rows, attend);
        var sampled = Sampler.Sample(logits, draws);
        for (var i = 0; i < rows; i++)
        {
            if (sampled[i] is { } token && _slots[i] is { } request)
            {
                Deliver(request, token);
            }
        }
    }

    private void Deliver(GenerationRequest request, SampledToken token)
    {
        if (request.GeneratedCount == 0)
        {
            _metrics.ObserveTimeToFirstToken(_time.GetElapsedTime(request.ArrivalTimestamp).TotalSeconds);
        }
        _metrics.AddGenerationTokens(1);
        if (request.Accept(token))
        {
            Finish(request, request.Slot);
        }
    }

    private void Finish(GenerationRequest request, int? slot)
    {
        if (request.GeneratedCount > 0)
        {
            _metrics.ObserveE2eLatency(_time.GetElapsedTime(request.ArrivalTimestamp).TotalSeconds);
        }
        request.Abort("abort");
        if (slot is { } s && s >= 0 && ReferenceEquals(_slots[s], request))
        {
            _slots[s] = null;
        }
        Interlocked.Decrement(ref _inFlight);
    }

    private void Publish()
    {
        var used = 0L;
        var running = 0;
        foreach (var request in _slots.OfType<GenerationRequest>())
        {
            running++;
            used += request.Prefilled + request.GeneratedCount;
        }
        _metrics.Running = running;
        _metrics.Waiting = _waiting.Count + _incoming.Count;
        _metrics.KvCacheUsage = (double)used / ((long)_batch.Slots * _batch.MaxContext);
    }

    /// <summary>Stops taking requests; in-flight ones continue.</summary>
    public void StopAccepting() => _stopping = true;

    public void Dispose()
    {
        _stopped = true;
        _signal.Release();
        _thread.Join(TimeSpan.FromSeconds(30));
        _signal.Dispose();
    }
}
