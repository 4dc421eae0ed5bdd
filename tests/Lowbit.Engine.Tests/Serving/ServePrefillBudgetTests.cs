using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Serving;
using Lowbit.Engine.Tokenization;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>
/// The scheduler's prefill budget (<c>--max-num-batched-tokens</c>) and the load-time warm-up, on the trained fixture
/// through <see cref="ServeScheduler"/> and <see cref="FastDecodeBackend"/> (float32, CPU): a 2048-token budget over
/// many requests (chunks spanning requests, one request split across iterations, prompt log-probabilities, LoRA rows)
/// gives what small chunks give, and a warmed-up server answers its first requests as a cold one does.
/// </summary>
public sealed class ServePrefillBudgetTests
{
    private const int MaxContext = 96;
    private const int NewTokens = 6;

    private static LlamaForCausalLM Fixture()
    {
        using var checkpoint = Checkpoint.Open(TokenizerTests.FixtureDirectory);
        var model = ModelIo.Load(checkpoint, ScalarType.Float32, CPU);
        model.eval();
        return model;
    }

    /// <summary><paramref name="count"/> byte-token prompts of 60–89 tokens cut from the fixture's held-out text.</summary>
    private static int[][] Prompts(int count)
    {
        var text = File.ReadAllText(Path.Combine(TokenizerTests.FixtureDirectory, "eval.txt"));
        var tokenizer = new ByteTokenizer();
        return Enumerable.Range(0, count)
            .Select(i => (int[])[ByteTokenizer.Bos, .. tokenizer.Encode(text.Substring(i * 37, 59 + (i * 7 % 30)))])
            .ToArray();
    }

    /// <summary>Request i: greedy, its adapter (i % 3: base, A, B), the prompt's log-probabilities (top 2) for every other one.</summary>
    private static RequestOptions Request(int[] prompt, int i) => new()
    {
        Prompt = prompt,
        MaxTokens = NewTokens,
        Sampling = new SamplingParams { Temperature = 0 },
        IgnoreEos = true,
        Adapter = i % 3,
        PromptLogprobs = i % 2 == 0 ? 2 : null,
    };

    private sealed record Answer(string Text, IReadOnlyList<PromptLogprob> PromptLogprobs);

    /// <summary>
    /// Submits every request while the loop is held (so the first iteration sees them all), then reads every answer;
    /// with <paramref name="warmUp"/> the scheduler warms up first, as the server does before /ready.
    /// </summary>
    private static (Answer[] Answers, WarmUpResult? WarmUp) Serve(IDecodeBackend backend, Action<int[]> beforeStep, int budget, IReadOnlyList<RequestOptions> requests, bool warmUp = false, List<string>? phases = null)
    {
        var metrics = new ServeMetrics("budget");
        Exception? failure = null;
        using var scheduler = new ServeScheduler(backend, new TokenIdTokenizer(260, ByteTokenizer.Bos, ByteTokenizer.Eos),
            new SchedulerOptions { MaxConcurrency = backend.Slots, MaxContext = backend.MaxContext, PrefillChunk = budget },
            metrics, TimeProvider.System, ex => failure = ex)
        {
            BeforeStep = beforeStep,
            WarmUpPhase = phases is null ? null : phases.Add,
        };
        var warm = warmUp ? scheduler.WarmUpAsync().GetAwaiter().GetResult() : null;
        using var gate = new ManualResetEventSlim();
        var held = scheduler.RunOnLoop(() => gate.Wait(TimeSpan.FromSeconds(30)));
        var submitted = requests.Select(scheduler.Submit).ToArray();
        gate.Set();
        held.GetAwaiter().GetResult();
        var answers = submitted.Select(async r =>
        {
            var text = new System.Text.StringBuilder();
            await foreach (var e in r.Events.ReadAllAsync())
            {
                text.Append(e.Text);
            }
            return new Answer(text.ToString(), r.PromptLogprobs);
        }).ToArray();
        var done = Task.WhenAll(answers);
        Assert.True(done.Wait(TimeSpan.FromSeconds(120)), "the answers did not complete in 120 s");
        Assert.Null(failure);
        return (done.Result, warm);
    }

    private static void AssertSameAnswers(Answer[] expected, Answer[] actual, double tolerance)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (var i = 0; i < expected.Length; i++)
        {
            Assert.Equal(expected[i].Text, actual[i].Text);
            Assert.Equal(expected[i].PromptLogprobs.Count, actual[i].PromptLogprobs.Count);
            for (var p = 0; p < expected[i].PromptLogprobs.Count; p++)
            {
                var (e, a) = (expected[i].PromptLogprobs[p], actual[i].PromptLogprobs[p]);
                Assert.Equal(e.Token, a.Token);
                Assert.Equal(e.Logprob is null, a.Logprob is null);
                Assert.True(Math.Abs((e.Logprob ?? 0) - (a.Logprob ?? 0)) <= tolerance, $"request {i}, prompt token {p}: {e.Logprob} vs {a.Logprob}");
                Assert.Equal(e.Top.Select(t => t.Token), a.Top.Select(t => t.Token));
            }
        }
    }

    /// <summary>Records every batched prefill's chunks on the way to the fast backend.</summary>
    private sealed class Recording(FastDecodeBackend inner) : IDecodeBackend
    {
        public List<IReadOnlyList<PrefillChunk>> Prefills { get; } = [];

        public int Slots => inner.Slots;

        public int MaxContext => inner.MaxContext;

        public long CacheBytes => inner.CacheBytes;

        public int ScratchPosition => inner.ScratchPosition;

        public bool BatchesPrefill => true;

        public Tensor Prefill(int slot, IReadOnlyList<int> tokens, int start) => inner.Prefill(slot, tokens, start);

        public Tensor Prefill(IReadOnlyList<PrefillChunk> chunks)
        {
            Prefills.Add(chunks);
            return inner.Prefill(chunks);
        }

        public Tensor Step(long[] tokens, long[] positions, int rows, int attend) => inner.Step(tokens, positions, rows, attend);

        public void ClearSlots() => inner.ClearSlots();

        public void Dispose()
        {
        }
    }

    [Fact]
    public void Does_prefill_many_requests_with_a_2048_token_budget_like_small_chunks_and_like_each_request_alone()
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var (a, b) = FastDecodeBackendTests.WriteAdapters(temp);
        var prompts = Prompts(28);
        Assert.True(prompts.Sum(p => p.Length) > 2048, "the prompts must overflow one 2048-token iteration");
        var requests = prompts.Select(Request).ToArray();
        using var model = Fixture();
        using var adapters = new LoraSet(model, CPU);
        adapters.Load("a", a);
        adapters.Load("b", b);
        using var fast = new FastDecodeBackend(model, prompts.Length, MaxContext, CPU, adapters);
        var recording = new Recording(fast);

        var (big, _) = Serve(recording, fast.SelectAdapters, 2048, requests);
        var (small, _) = Serve(fast, fast.SelectAdapters, 64, requests);

        // The first iteration is one forward of exactly 2048 tokens spanning most requests; the request at the budget's
        // edge is cut and finished in the next iteration, from where its first chunk ended.
        var first = recording.Prefills[0];
        Assert.Equal(2048, first.Sum(c => c.Tokens.Count));
        Assert.True(first.Count > 20, $"{first.Count} requests in the first forward");
        var cut = first[^1];
        Assert.True(cut.Tokens.Count < prompts[cut.Slot].Length, "the last chunk of the first forward is a cut prompt");
        Assert.Contains(recording.Prefills[1], c => c.Slot == cut.Slot && c.Start == cut.Tokens.Count);
        Assert.Contains(first, c => c.Adapter == 1);
        Assert.Contains(first, c => c.Adapter == 2);
        Assert.Contains(first, c => c.AllPositions);

        AssertSameAnswers(small, big, 1e-4);
        for (var i = 0; i < prompts.Length; i += 2)
        {
            Assert.Equal(prompts[i].Length, big[i].PromptLogprobs.Count);
        }
        // Each request alone (the cut one, one per adapter, one with log-probabilities) gives the same answer.
        foreach (var i in new[] { cut.Slot, 0, 1, 2, 27 }.Distinct())
        {
            var (alone, _) = Serve(fast, fast.SelectAdapters, 2048, [requests[i]]);
            AssertSameAnswers([big[i]], alone, 1e-4);
        }
    }

    [Fact]
    public void Does_answer_the_first_requests_after_the_warm_up_exactly_as_without_it()
    {
        TorchRuntime.Initialize();
        using var temp = new TempDir();
        var (a, b) = FastDecodeBackendTests.WriteAdapters(temp);
        var prompts = Prompts(6);
        var requests = prompts.Select(Request).ToArray();
        const int Slots = 8;

        var phases = new List<string>();
        Answer[] Run(bool warmUp, out WarmUpResult? warm)
        {
            using var model = Fixture();
            using var adapters = new LoraSet(model, CPU);
            adapters.Load("a", a);
            adapters.Load("b", b);
            using var fast = new FastDecodeBackend(model, Slots, MaxContext, CPU, adapters);
            (var answers, warm) = Serve(fast, fast.SelectAdapters, 2048, requests, warmUp, phases);
            return answers;
        }

        var cold = Run(warmUp: false, out _);
        var warmed = Run(warmUp: true, out var warm);

        // The warm-up filled every slot's whole context (the budget is larger), stepped every row, and left nothing behind.
        Assert.NotNull(warm);
        Assert.Equal(Slots * MaxContext, warm.PrefillTokens);
        Assert.Equal(Slots, warm.PrefillChunks);
        Assert.Equal(Slots, warm.DecodeRows);
        // Each part reported once, in order (serve's LOWBIT_WARMUP_MEMORY report hangs off these).
        Assert.Equal(["prefill, every position's logits", "prompt log-probabilities", "prefill, last positions' logits", "sampler after the prefill",
            "decode step", "sampler after the decode step"], phases);
        AssertSameAnswers(cold, warmed, 0);
        Assert.Contains(cold, answer => answer.PromptLogprobs.Count > 0);
    }

    [Fact]
    public void Does_default_the_prefill_budget_by_device_and_take_the_flag_when_given()
    {
        TorchRuntime.Initialize();
        var context = new VerbContext(TextWriter.Null, TextWriter.Null, TimeProvider.System, 0);
        var cpu = ServeVerb.Resolve(new ServeRequest { Model = TokenizerTests.FixtureDirectory, Device = ComputeDevice.Cpu }, context);
        var given = ServeVerb.Resolve(new ServeRequest { Model = TokenizerTests.FixtureDirectory, Device = ComputeDevice.Cpu, MaxNumBatchedTokens = 3000 }, context);

        Assert.Equal(PrefillBudgets.Cpu, cpu.PrefillChunk);
        Assert.Equal(3000, given.PrefillChunk);
        Assert.Equal(2048, PrefillBudgets.For(new Device(TorchSharp.DeviceType.CUDA, 0), gguf: false));
        Assert.Equal(PrefillBudgets.Cpu, PrefillBudgets.For(new Device(TorchSharp.DeviceType.CUDA, 0), gguf: true));
        Assert.Equal(512, PrefillBudgets.For(CPU, gguf: false));
    }
}
