using System.Text.Json;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// <c>finetune --shards N</c> on the CPU (every shard <c>cpu</c>): the split run takes the same steps as the unsplit one
/// (loss trajectory and saved weights), a checkpoint resumes on another shard count, and bad splits exit 42.
/// </summary>
public sealed class ShardedFineTuneTests
{
    /// <summary>A random 3-layer model with the byte tokenizer (3 layers: up to 3 shards of one layer each).</summary>
    private static TempDir Setup(bool quantized = false, bool tied = false)
    {
        var dir = new TempDir();
        TinyModels.SaveWithByteTokenizer(dir.File("base"), seed: 5, layers: 3, tied: tied);
        if (quantized)
        {
            using var checkpoint = Checkpoint.Open(dir.File("base"));
            using var q = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 32 });
            LowbitCheckpoint.Write(dir.File("q"), checkpoint, q);
            foreach (var f in new[] { "tokenizer.json", "tokenizer_config.json" })
            {
                File.Copy(Path.Combine(dir.File("base"), f), Path.Combine(dir.File("q"), f), overwrite: true);
            }
        }
        File.WriteAllLines(dir.File("data.jsonl"), Enumerable.Range(0, 16).Select(i =>
            JsonSerializer.Serialize(new Dictionary<string, string> { ["instruction"] = $"Count to {i % 6 + 2}", ["output"] = string.Join(' ', Enumerable.Range(1, i % 6 + 2)) })));
        return dir;
    }

    private static FineTuneRequest Request(TempDir dir, FineTuneMethod method, string name) => new()
    {
        BaseModel = dir.File(method == FineTuneMethod.Qlora ? "q" : "base"),
        Method = method,
        Dataset = dir.File("data.jsonl"),
        Out = dir.File(name),
        R = 4,
        Alpha = 8,
        Dropout = 0.1,
        TargetModules = ["q_proj", "v_proj", "down_proj"],
        SeqLength = 192,
        MicroBatch = 2,
        GradAccumulation = 2,
        MaxSteps = 4,
        LearningRate = method == FineTuneMethod.Full ? 1e-3 : 5e-3,
        WarmupSteps = 1,
        MaxGradNorm = 0.5,
        EvalSplit = 0.2,
        Seed = 11,
        Device = ComputeDevice.Cpu,
    };

    private static (FineTuneOutcome Outcome, List<EngineEvent> Events) Train(FineTuneRequest request, Func<List<EngineEvent>, bool>? stop = null)
    {
        var events = new List<EngineEvent>();
        var outcome = new FineTuner(request, request.BaseModel, events.Add, stop is null ? null : () => stop(events)).Run();
        return (outcome, events);
    }

    private static void AssertSameWeights(string expected, string actual, double tolerance)
    {
        using var a = Checkpoint.Open(expected);
        using var b = Checkpoint.Open(actual);
        Assert.Equal(a.TensorNames.Order(), b.TensorNames.Order());
        foreach (var name in a.TensorNames)
        {
            using var x = a.Load(name, ScalarType.Float32);
            using var y = b.Load(name, ScalarType.Float32);
            Assert.True(x.allclose(y, tolerance, tolerance), $"{name} differs");
        }
    }

    private static void AssertSameOutput(FineTuneMethod method, string expected, string actual, double tolerance)
    {
        if (method == FineTuneMethod.Full)
        {
            AssertSameWeights(expected, actual, tolerance);
            return;
        }
        FineTunerTests.AssertSameAdapter(expected, actual, tolerance);
    }

    private static double[] Losses(List<EngineEvent> events) => events.OfType<TrainEvent>().Select(t => t.Loss).ToArray();

    [Theory]
    [InlineData(FineTuneMethod.Lora)]
    [InlineData(FineTuneMethod.Qlora)]
    [InlineData(FineTuneMethod.Full)]
    public void Does_take_the_same_steps_when_split_over_two_and_three_shards(FineTuneMethod method)
    {
        using var dir = Setup(quantized: method == FineTuneMethod.Qlora);
        var (one, oneEvents) = Train(Request(dir, method, "one"));
        var (two, twoEvents) = Train(Request(dir, method, "two") with { Shards = 2 });
        // Three shards of one layer each, with every layer recomputed in the backward (gradient checkpointing per stage).
        var (three, threeEvents) = Train(Request(dir, method, "three") with { Shards = 3, ShardDevices = ["cpu", "cpu", "cpu"], GradientCheckpointing = true });

        Assert.Equal(4, Losses(oneEvents).Length);
        Assert.Equal(Losses(oneEvents), Losses(twoEvents), (a, b) => Math.Abs(a - b) <= 1e-5);
        Assert.Equal(Losses(oneEvents), Losses(threeEvents), (a, b) => Math.Abs(a - b) <= 1e-5);
        Assert.Equal(one.EvalLoss!.Value, two.EvalLoss!.Value, 5);
        Assert.Equal(one.EvalLoss!.Value, three.EvalLoss!.Value, 5);
        AssertSameOutput(method, dir.File("one"), dir.File("two"), 1e-5);
        AssertSameOutput(method, dir.File("one"), dir.File("three"), 1e-5);
        Assert.NotEqual(Losses(oneEvents)[0], Losses(oneEvents)[^1]);
        // The split is real: one plan line per shard, the embedding on the first, the head on the last.
        var logs = threeEvents.OfType<LogEvent>().Select(l => l.Message).ToList();
        Assert.Contains(logs, l => l.StartsWith("shard 0: layers 0-0 on cpu (+ embedding)", StringComparison.Ordinal));
        Assert.Contains(logs, l => l.StartsWith("shard 2: layers 2-2 on cpu (+ final norm and head)", StringComparison.Ordinal));
        Assert.DoesNotContain(oneEvents.OfType<LogEvent>(), l => l.Message.StartsWith("shard ", StringComparison.Ordinal));
        Assert.All(threeEvents.OfType<TrainEvent>(), t => Assert.Equal([t.PeakMemoryBytes!.Value], t.PeakMemoryBytesPerDevice!));
        Assert.All(oneEvents.OfType<TrainEvent>(), t => Assert.Null(t.PeakMemoryBytesPerDevice));
    }

    [Fact]
    public void Does_train_a_tied_head_with_the_embedding_on_the_first_shard_when_split()
    {
        // Full fine-tuning of a tied embedding: the logits use the first shard's embedding, so its gradient sums the
        // input and output uses across the pipeline's two ends.
        using var dir = Setup(tied: true);
        var (_, oneEvents) = Train(Request(dir, FineTuneMethod.Full, "one"));
        var (_, twoEvents) = Train(Request(dir, FineTuneMethod.Full, "two") with { Shards = 2 });

        Assert.Equal(Losses(oneEvents), Losses(twoEvents), (a, b) => Math.Abs(a - b) <= 1e-5);
        AssertSameWeights(dir.File("one"), dir.File("two"), 1e-5);
        using var saved = Checkpoint.Open(dir.File("two"));
        Assert.DoesNotContain("lm_head.weight", saved.TensorNames);
    }

    [Fact]
    public void Does_continue_a_one_shard_checkpoint_on_two_shards_to_the_uninterrupted_adapter()
    {
        using var dir = Setup();
        Train(Request(dir, FineTuneMethod.Lora, "uninterrupted"));
        var pod = Request(dir, FineTuneMethod.Lora, "resumed") with { CheckpointDir = dir.File("ckpt"), SaveSteps = 100, ResumeFrom = FineTuneRequest.ResumeLatest };

        Assert.Throws<TrainingInterruptedException>(() => Train(pod, events => events.OfType<TrainEvent>().Count() == 2));
        var (resumed, events) = Train(pod with { Shards = 2 });

        Assert.Equal(2, resumed.ResumedFromStep);
        Assert.Equal(3, events.OfType<TrainEvent>().First().Step);
        AssertSameOutput(FineTuneMethod.Lora, dir.File("uninterrupted"), dir.File("resumed"), 1e-5);
    }

    [Theory]
    [InlineData(new[] { "--shards", "4" }, "--shards", "1 to 3")]
    [InlineData(new[] { "--shards", "2", "--cuda-graph", "true" }, "--cuda-graph", "--shards above 1")]
    [InlineData(new[] { "--shards", "2", "--shard-devices", "cpu,gpu" }, "--shard-devices", "cuda:N")]
    public void Does_exit_42_naming_the_flag_when_the_split_is_bad(string[] extra, string flag, string fix)
    {
        using var dir = Setup();
        var request = Request(dir, FineTuneMethod.Lora, "out") with { ResultFile = dir.File("result.json") };

        var exit = EngineCli.Run([.. request.ToArgs(), .. extra], new StringWriter(), new StringWriter(), TimeProvider.System);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        var message = EngineResult.Parse(File.ReadAllText(dir.File("result.json")))!.Error!.Message;
        Assert.Contains(flag, message, StringComparison.Ordinal);
        Assert.Contains(fix, message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_name_shards_and_the_stacking_fix_when_there_are_fewer_gpus_than_shards()
    {
        var cuda = new Device(DeviceType.CUDA, 0);
        var request = new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Qlora, Dataset = "d", Out = "o", Shards = 4 };

        var tooMany = Assert.Throws<ProtocolArgumentException>(() => TrainingShards.ResolveDevices(request, cuda, visibleGpus: 2));
        var stacked = TrainingShards.ResolveDevices(request with { ShardDevices = ["cuda:0", "cuda:0", "cuda:1", "cuda:1"] }, cuda, visibleGpus: 2);
        var missing = Assert.Throws<ProtocolArgumentException>(() => TrainingShards.ResolveDevices(request with { ShardDevices = ["cuda:0", "cuda:1", "cuda:2", "cuda:3"] }, cuda, visibleGpus: 2));

        Assert.Equal("--shards", tooMany.Argument);
        Assert.Contains("--shard-devices", tooMany.Message, StringComparison.Ordinal);
        Assert.Equal([0, 0, 1, 1], stacked.Select(d => (int)d.index));
        Assert.Equal("--shard-devices", missing.Argument);
        Assert.Empty(TrainingShards.ResolveDevices(request with { Shards = 1 }, cuda, visibleGpus: 1));
    }

    [Fact]
    public void Does_plan_frozen_weights_and_trained_state_per_shard_when_splitting()
    {
        using var dir = Setup();
        var config = LlamaConfig.Load(Path.Combine(dir.File("base"), "config.json"));
        var devices = new[] { CPU, CPU, CPU };
        var weights = Lowbit.Engine.Serving.PipelinePlacement.CheckpointBytes(dir.File("base"), config, ScalarType.Float32);
        var lora = Request(dir, FineTuneMethod.Lora, "o") with { Shards = 3 };
        var perLayer = TrainingShards.TrainedBytesPerElement * TrainingShards.LoraElementsPerLayer(config, new LoraSettings { R = lora.R, Alpha = lora.Alpha, TargetModules = lora.TargetModules });

        var loraPlan = TrainingShards.Plan(dir.File("base"), config, ScalarType.Float32, lora, devices);
        var fullPlan = TrainingShards.Plan(dir.File("base"), config, ScalarType.Float32, lora with { Method = FineTuneMethod.Full }, devices);

        Assert.Equal([1, 1, 1], loraPlan.Stages.Select(s => s.LayerCount));
        Assert.Equal(loraPlan.Stages.Select(s => s.LayerCount * perLayer), loraPlan.CacheBytes);
        Assert.Equal(weights.Layers.Sum() + weights.Embedding + weights.Head, loraPlan.WeightBytes.Sum());
        Assert.Equal(weights.Layers[0] + perLayer + weights.Embedding, loraPlan.Stages[0].Bytes);
        // Full: every weight is trained, so each byte of weights brings three more (gradient, two moments).
        Assert.Equal(3 * weights.Layers.Sum(), fullPlan.CacheBytes.Sum());
        Assert.Equal(4 * (weights.Layers[2] + weights.Head), fullPlan.Stages[2].Bytes);
    }

    [Fact]
    public void Does_count_the_adapter_elements_each_layer_trains_when_planning_a_split()
    {
        var config = TinyModels.Config with { NumHiddenLayers = 4 };
        var lora = new LoraSettings { R = 8, Alpha = 16, TargetModules = ["q_proj", "down_proj"] };

        // q_proj 64→64 and down_proj 128→64 at rank 8: 8·(64+64) + 8·(128+64).
        Assert.Equal(8 * (64 + 64) + 8 * (128 + 64), TrainingShards.LoraElementsPerLayer(config, lora));
        Assert.Equal(0, TrainingShards.LoraElementsPerLayer(config, lora with { TargetModules = ["lm_head"] }));
    }
}
