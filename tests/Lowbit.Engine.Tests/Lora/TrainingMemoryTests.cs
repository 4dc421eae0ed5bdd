using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Lora;
using System.Text.Json;
using Lowbit.Engine.Network;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Quantization;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>
/// Tensors kept alive from one training step to the next (the H200 run's peak grew ~0.5 GiB per step). Counts are
/// TorchSharp's per-thread live tensor statistics, so each check runs on a thread of its own (xUnit runs classes in
/// parallel).
/// </summary>
public sealed class TrainingMemoryTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static long OnOwnThread(Func<long> body)
    {
        long result = long.MinValue;
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                result = body();
            }
            catch (Exception ex)
            {
                failure = ex;
            }
        });
        thread.Start();
        thread.Join();
        if (failure is not null)
        {
            throw new InvalidOperationException("the training thread failed", failure);
        }
        return result;
    }

    private static long Live() => DisposeScopeManager.Statistics.ThreadTotalLiveCount;

    /// <summary>
    /// On CUDA the autograd engine runs the checkpointed layers' backward on its device thread, where no dispose scope
    /// is open: whatever the backward (and TorchSharp's node around it) creates there must be disposed explicitly.
    /// Here the backward runs on a thread without a scope too.
    /// </summary>
    [Fact]
    public void Does_not_keep_tensors_from_a_checkpointed_backward_run_outside_any_dispose_scope()
    {
        var leaked = OnOwnThread(() =>
        {
            using var model = new LlamaForCausalLM(TinyModels.Config, ScalarType.Float32, CPU);
            ModelIo.InitializeRandom(model, 1, std: 0.1);
            var settings = new LoraSettings { R = 4, Alpha = 8, Dropout = 0.1, TargetModules = LoraSettings.AllTargets };
            LoraModel.Wrap(model, settings, 1, CPU);
            model.Model.GradientCheckpointing = true;
            model.train();
            using var ids = TinyModels.Tokens(2, 24, 5);
            void Step()
            {
                Tensor loss;
                using (var scope = NewDisposeScope())
                {
                    loss = model.forward(ids, null).to(ScalarType.Float32).pow(Scalars.Of(2)).mean().MoveToOuterDisposeScope();
                }
                loss.backward();   // as on CUDA's autograd thread: no dispose scope around it
                GradientCheckpoint.Release(model.Model);
                loss.Dispose();
            }
            Step();
            var before = Live();
            for (var i = 0; i < 3; i++)
            {
                Step();
            }
            return Live() - before;
        });

        Assert.Equal(0, leaked);
    }

    /// <summary>
    /// The whole loop (AdamW, clipping, accumulation, dropout, progress, periodic checkpoints, eval): the number of live
    /// tensors after step 20 equals the number after step 3 (a few one-time wrappers of the model load stay until a GC; printed).
    /// </summary>
    [Theory]
    [InlineData(FineTuneMethod.Lora, false, false)]
    [InlineData(FineTuneMethod.Lora, true, true)]
    [InlineData(FineTuneMethod.Qlora, true, false)]
    [InlineData(FineTuneMethod.Qlora, false, true)]
    public void Does_keep_the_live_tensor_count_flat_across_steps(FineTuneMethod method, bool checkpointing, bool evalAndSave)
    {
        using var dir = new TempDir();
        TinyModels.SaveWithByteTokenizer(dir.File("base"));
        var baseModel = dir.File("base");
        if (method == FineTuneMethod.Qlora)
        {
            using var checkpoint = Checkpoint.Open(baseModel);
            using var quantized = ModelQuantizer.Quantize(checkpoint, new ModelQuantizeOptions { Method = QuantizationMethod.Rtn, Bits = 4, GroupSize = 32 });
            LowbitCheckpoint.Write(dir.File("q"), checkpoint, quantized);
            baseModel = dir.File("q");
        }
        File.WriteAllLines(dir.File("data.jsonl"), Enumerable.Range(0, 16).Select(i =>
            JsonSerializer.Serialize(new Dictionary<string, string> { ["text"] = $"Count to {i % 5 + 2}: " + string.Join(' ', Enumerable.Range(1, i % 5 + 2)) })));
        var request = new FineTuneRequest
        {
            BaseModel = baseModel, Method = method, Dataset = dir.File("data.jsonl"), DatasetFormat = DatasetFormat.Text, Out = dir.File("out"), R = 4, Alpha = 8, Dropout = 0.1,
            TargetModules = LoraSettings.AllTargets, SeqLength = 64, MicroBatch = 2, GradAccumulation = 2, MaxSteps = 20, LearningRate = 1e-3,
            WarmupSteps = 2, EvalSplit = evalAndSave ? 0.25 : 0, GradientCheckpointing = checkpointing, Device = ComputeDevice.Cpu,
            CheckpointDir = evalAndSave ? dir.File("ckpt") : null, SaveSteps = evalAndSave ? 4 : null, GgufAdapter = evalAndSave,
        };
        var counts = new Dictionary<int, long>();
        var (start, end) = (0L, 0L);
        OnOwnThread(() =>
        {
            start = Live();
            new FineTuner(request, baseModel, e =>
            {
                if (e is TrainEvent t)
                {
                    counts[t.Step] = Live();
                }
            }).Run();
            end = Live();
            return 0;
        });

        output.WriteLine($"live tensors: start {start}, step 3 {counts[3]}, step 20 {counts[20]}, end {end}");
        Assert.Equal(counts[3], counts[20]);
    }
}
