using System.Text.Json;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Decoding;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// The captured fine-tune micro-step's data flow, on the CPU: a recorder that re-runs the recorded step on replay
/// stands in for the CUDA graph, so what a replay reads is only what the host wrote into the static tensors (a batch
/// or divisor not copied in shows as different gradients). Whether libtorch records the step is for the GPU bundle.
/// </summary>
public sealed class TrainingGraphTests
{
    /// <summary>Records like a CUDA graph: the warm-up runs, the step does not until a replay.</summary>
    private sealed class ReplayingRecorder : IStepGraph
    {
        private Action? _step;

        public int Captures { get; private set; }

        public int Replays { get; private set; }

        public void Capture(Action warmUp, Action step)
        {
            warmUp();
            _step = step;
            Captures++;
        }

        public void Replay()
        {
            Replays++;
            _step!();
        }

        public void Dispose()
        {
        }
    }

    private static (LlamaForCausalLM Model, List<(string Name, Tensor Parameter)> Trainable) LoraModelWithRandomB(long seed)
    {
        var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
        ModelIo.InitializeRandom(model, 1, std: 0.1);
        var settings = new LoraSettings { R = 4, Alpha = 8, Dropout = 0, TargetModules = LoraSettings.AllTargets };
        var modules = LoraModel.Wrap(model, settings, seed, CPU);
        using (var noGrad = no_grad())
        {
            foreach (var (_, module) in modules)
            {
                module.B.copy_(randn(module.B.shape, generator: new Generator((ulong)module.Index + 7)).mul(Scalars.Of(0.05)));
            }
        }
        model.train();
        var trainable = modules.SelectMany(m => new[] { (m.Path + ".lora_A", (Tensor)m.Module.A), (m.Path + ".lora_B", (Tensor)m.Module.B) }).ToList();
        return (model, trainable);
    }

    private static List<PackedBlock> Blocks(int count, int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ =>
        {
            var ids = Enumerable.Range(0, length + 1).Select(_ => (long)random.Next(3, TinyModels.Config.VocabSize)).ToArray();
            // Some positions untrained, so the targets tensor matters.
            var trained = Enumerable.Range(0, length + 1).Select(t => t % 3 != 0).ToArray();
            return new PackedBlock(ids, trained);
        }).ToList();
    }

    private static Tensor[] Gradients(List<(string Name, Tensor Parameter)> trainable) =>
        trainable.Select(t => t.Parameter.grad!.clone()).ToArray();

    /// <summary>Eager micro-steps (loss divided by the divisor, backward): the losses; the gradients accumulate in the model.</summary>
    private static List<float> EagerMicroSteps(LlamaForCausalLM model, IReadOnlyList<List<PackedBlock>> batches, double[] divisors)
    {
        var losses = new List<float>();
        for (var i = 0; i < batches.Count; i++)
        {
            using var scope = NewDisposeScope();
            using var divisor = divisors[i].ToScalar();
            var loss = FineTuner.LossSum(model, batches[i], CPU, out _).div(divisor);
            loss.backward();
            GradientCheckpoint.Release(model.Model);
            losses.Add(loss.item<float>());
        }
        return losses;
    }

    private static void AssertSameGradients(List<(string Name, Tensor Parameter)> eager, List<(string Name, Tensor Parameter)> captured, bool requireNonzero)
    {
        var expected = Gradients(eager);
        var actual = Gradients(captured);
        for (var i = 0; i < expected.Length; i++)
        {
            var scale = expected[i].abs().max().item<float>();
            if (requireNonzero)
            {
                Assert.True(scale > 0, $"{eager[i].Name}: zero gradient, the test would prove nothing");
            }
            var difference = expected[i].sub(actual[i]).abs().max().item<float>();
            Assert.True(difference <= 1e-5 * scale, $"{eager[i].Name}: gradients differ by {difference} (largest {scale})");
        }
    }

    [Fact]
    public void Does_accumulate_the_gradients_of_eager_micro_steps_when_each_replay_reads_only_the_static_inputs()
    {
        var batches = new[] { Blocks(2, 16, 1), Blocks(2, 16, 2), Blocks(2, 16, 3) };
        double[] divisors = [37, 41, 29];

        var (eager, eagerTrainable) = LoraModelWithRandomB(5);
        using var eagerModel = eager;
        var eagerLosses = EagerMicroSteps(eager, batches, divisors);

        var (captured, capturedTrainable) = LoraModelWithRandomB(5);
        using var capturedModel = captured;
        var recorder = new ReplayingRecorder();
        var log = new List<string>();
        using var graph = new TrainingGraph(captured, CPU, log.Add, () => recorder);
        var losses = new List<float>();
        for (var i = 0; i < batches.Length; i++)
        {
            using var scope = NewDisposeScope();
            var loss = graph.TryRun(batches[i], divisors[i]);
            Assert.NotNull(loss);
            losses.Add(loss.item<float>());
        }

        Assert.Equal(1, recorder.Captures);
        Assert.Equal(2, recorder.Replays);   // the first batch was the eager warm-up
        Assert.Equal(2, graph.Replays);
        Assert.Contains(log, l => l.Contains("captured", StringComparison.Ordinal));
        for (var i = 0; i < losses.Count; i++)
        {
            Assert.Equal(eagerLosses[i], losses[i], 5);
        }
        AssertSameGradients(eagerTrainable, capturedTrainable, requireNonzero: true);
    }

    private static List<PackedBlock> Packed(List<PackedBlock> blocks, int cut) =>
        blocks.Select(b => b with { Documents = Enumerable.Range(0, b.Ids.Length).Select(t => t < cut ? 0 : 1).ToArray() }).ToList();

    [Fact]
    public void Does_replay_a_step_captured_on_packed_rows_for_other_packings_and_plain_rows()
    {
        // The static positions and mask must be rewritten per replay: another document boundary, then a plain row.
        var batches = new[] { Packed(Blocks(2, 16, 1), 6), Packed(Blocks(2, 16, 2), 11), Blocks(2, 16, 3) };
        double[] divisors = [31, 23, 19];
        var (eager, eagerTrainable) = LoraModelWithRandomB(5);
        using var eagerModel = eager;
        var eagerLosses = EagerMicroSteps(eager, batches, divisors);
        var (captured, capturedTrainable) = LoraModelWithRandomB(5);
        using var capturedModel = captured;
        var recorder = new ReplayingRecorder();
        using var graph = new TrainingGraph(captured, CPU, _ => { }, () => recorder);
        for (var i = 0; i < batches.Length; i++)
        {
            using var scope = NewDisposeScope();
            var loss = graph.TryRun(batches[i], divisors[i]);
            Assert.NotNull(loss);
            Assert.Equal(eagerLosses[i], loss.item<float>(), 5);
        }
        Assert.Equal(2, recorder.Replays);
        AssertSameGradients(eagerTrainable, capturedTrainable, requireNonzero: false);
    }

    [Fact]
    public void Does_leave_packed_and_differently_shaped_micro_batches_to_the_eager_step()
    {
        var (model, _) = LoraModelWithRandomB(5);
        using var owned = model;
        var recorder = new ReplayingRecorder();
        using var graph = new TrainingGraph(model, CPU, _ => { }, () => recorder);
        using (var scope = NewDisposeScope())
        {
            Assert.NotNull(graph.TryRun(Blocks(2, 16, 1), 10));
        }
        Assert.Null(graph.TryRun(Blocks(1, 16, 2), 10));   // a short last micro-batch
        Assert.Null(graph.TryRun(Blocks(2, 12, 2), 10));   // another length
        Assert.Null(graph.TryRun(Packed(Blocks(2, 16, 3), 8), 10));   // captured on plain rows: no mask to feed
        Assert.Equal(0, recorder.Replays);
    }

    [Fact]
    public void Does_train_the_same_adapter_through_the_fine_tuner_with_the_step_replayed()
    {
        // The whole loop: packed alpaca blocks (the step is captured with positions and mask), micro-batches of 2 with
        // 2 accumulated per step, a short last micro-batch (eager), dropout masks per micro-batch, the flat AdamW
        // zeroing the gradients the replays accumulate into, eval after training.
        using var dir = new TempDir();
        TinyModels.SaveWithByteTokenizer(dir.File("base"));
        File.WriteAllLines(dir.File("data.jsonl"), Enumerable.Range(0, 23).Select(i => JsonSerializer.Serialize(
            new Dictionary<string, string> { ["instruction"] = $"Count to {(i % 7) + 2}", ["output"] = string.Join(' ', Enumerable.Range(1, (i % 7) + 2)) })));
        FineTuneRequest Request(string name) => new()
        {
            BaseModel = dir.File("base"), Method = FineTuneMethod.Lora, Dataset = dir.File("data.jsonl"), Out = dir.File(name),
            R = 4, Alpha = 8, Dropout = 0.1, TargetModules = LoraSettings.AllTargets, SeqLength = 384, MicroBatch = 2,
            GradAccumulation = 2, MaxSteps = 5, LearningRate = 5e-3, EvalSplit = 0.2, Seed = 3, Device = ComputeDevice.Cpu,
        };
        var eager = new FineTuner(Request("eager"), dir.File("base"), _ => { }).Run();
        var recorder = new ReplayingRecorder();
        var log = new List<string>();
        var replayed = new FineTuner(Request("replayed") with { CudaGraph = true }, dir.File("base"), e =>
        {
            if (e is LogEvent { Message: var message })
            {
                log.Add(message);
            }
        })
        { StepGraphs = () => recorder }.Run();

        Assert.Contains(log, l => l.StartsWith("CUDA graph: one micro-step of [2, 384] with per-document positions and mask", StringComparison.Ordinal));
        Assert.True(recorder.Replays >= 5, $"{recorder.Replays} replays");
        Assert.Equal(eager.FinalLoss, replayed.FinalLoss, 4);
        Assert.Equal(eager.EvalLoss!.Value, replayed.EvalLoss!.Value, 4);
        using var a = PeftAdapter.Read(dir.File("eager"));
        using var b = PeftAdapter.Read(dir.File("replayed"));
        foreach (var (module, w) in a.Modules)
        {
            Assert.True(w.A.allclose(b.Modules[module].A, 1e-5, 1e-5), $"{module} lora_A differs");
            Assert.True(w.B.allclose(b.Modules[module].B, 1e-5, 1e-5), $"{module} lora_B differs");
        }
    }

    [Fact]
    public void Does_say_why_a_run_cannot_use_a_captured_step()
    {
        FineTuneRequest Request(FineTuneMethod method, bool checkpointing, double dropout) => new()
        {
            BaseModel = "m", Method = method, Dataset = "d", Out = "o", GradientCheckpointing = checkpointing, Dropout = dropout, CudaGraph = true,
        };
        Assert.Contains("full fine-tuning", TrainingGraph.Unsupported(Request(FineTuneMethod.Full, false, 0), CPU));
        Assert.Contains("dropout", TrainingGraph.Unsupported(Request(FineTuneMethod.Lora, true, 0.05), CPU));
        Assert.Contains("CUDA device", TrainingGraph.Unsupported(Request(FineTuneMethod.Lora, true, 0), CPU));
        Assert.Contains("CUDA device", TrainingGraph.Unsupported(Request(FineTuneMethod.Qlora, false, 0.05), CPU));
    }
}
