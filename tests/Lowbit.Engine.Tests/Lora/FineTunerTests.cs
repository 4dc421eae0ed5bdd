using System.Text.Json;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Lora;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Tests.Quantization;
using Lowbit.Engine.Training;

namespace Lowbit.Engine.Tests.Lora;

/// <summary>The finetune loop on a tiny random byte-level model (fast): resume, checkpointing, the CLI contract.</summary>
public sealed class FineTunerTests
{
    private static string Dataset(TempDir dir)
    {
        var lines = Enumerable.Range(0, 24).Select(i =>
            JsonSerializer.Serialize(new Dictionary<string, string> { ["instruction"] = $"Count to {i % 7 + 2}", ["output"] = string.Join(' ', Enumerable.Range(1, i % 7 + 2)) }));
        var path = dir.File("data.jsonl");
        File.WriteAllLines(path, lines);
        return path;
    }

    private static FineTuneRequest Request(TempDir dir, string name) => new()
    {
        BaseModel = dir.File("base"),
        Method = FineTuneMethod.Lora,
        Dataset = dir.File("data.jsonl"),
        Out = dir.File(name),
        R = 4,
        Alpha = 8,
        Dropout = 0.1,
        TargetModules = ["q_proj", "v_proj", "down_proj"],
        SeqLength = 192,
        MicroBatch = 2,
        GradAccumulation = 2,
        MaxSteps = 6,
        LearningRate = 5e-3,
        WarmupSteps = 2,
        LrScheduler = LrScheduler.Cosine,
        EvalSplit = 0.2,
        Seed = 3,
        Device = ComputeDevice.Cpu,
    };

    private static TempDir Setup()
    {
        var dir = new TempDir();
        TinyModels.SaveWithByteTokenizer(dir.File("base"));
        Dataset(dir);
        return dir;
    }

    internal static void AssertSameAdapter(string expected, string actual, double tolerance)
    {
        using var a = PeftAdapter.Read(expected);
        using var b = PeftAdapter.Read(actual);
        Assert.Equal(a.Modules.Keys.Order(), b.Modules.Keys.Order());
        foreach (var (module, w) in a.Modules)
        {
            Assert.True(w.A.allclose(b.Modules[module].A, tolerance, tolerance), $"{module} lora_A differs");
            Assert.True(w.B.allclose(b.Modules[module].B, tolerance, tolerance), $"{module} lora_B differs");
        }
    }

    [Fact]
    public void Does_end_with_the_same_adapter_when_interrupted_and_resumed()
    {
        using var dir = Setup();
        var events = new List<EngineEvent>();
        var full = new FineTuner(Request(dir, "full") with { CheckpointDir = dir.File("ckpt-full"), SaveSteps = 2 }, dir.File("base"), events.Add).Run();

        var interrupted = Request(dir, "part") with { CheckpointDir = dir.File("ckpt"), SaveSteps = 100 };
        var stepsSeen = 0;
        var stopped = Assert.Throws<TrainingInterruptedException>(() =>
            new FineTuner(interrupted, dir.File("base"), e => stepsSeen += e is TrainEvent ? 1 : 0, () => stepsSeen == 3).Run());
        var resumed = new FineTuner(interrupted with { ResumeFrom = dir.File("ckpt") }, dir.File("base"), _ => { }).Run();

        Assert.Contains("step 3", stopped.Message, StringComparison.Ordinal);
        Assert.Equal(3, resumed.ResumedFromStep);
        Assert.Equal(6, full.Steps);
        AssertSameAdapter(dir.File("full"), dir.File("part"), 1e-6);
        Assert.Equal(full.EvalLoss!.Value, resumed.EvalLoss!.Value, 6);
        Assert.Equal([2, 4], events.OfType<CheckpointEvent>().Select(c => c.Step).Where(s => s < 6));
        Assert.True(File.Exists(Path.Combine(dir.File("ckpt-full"), "checkpoint-6", FineTuner.OptimizerFile)));
        Assert.DoesNotContain(Directory.GetDirectories(dir.File("ckpt")), d => Path.GetFileName(d).StartsWith(".tmp", StringComparison.Ordinal));
    }

    [Fact]
    public void Does_continue_from_the_latest_checkpoint_of_its_own_run_when_a_replaced_pod_starts_again()
    {
        // A Job's pods all carry the same arguments (--resume-from latest): the first pod finds only another run's
        // checkpoints (another learning rate) and starts at step 0, is stopped (SIGTERM) after step 3; its replacement
        // resumes from step 3 and ends with the uninterrupted run's adapter.
        using var dir = Setup();
        new FineTuner(Request(dir, "full"), dir.File("base"), _ => { }).Run();
        var other = new FineTuner(Request(dir, "other") with { CheckpointDir = dir.File("ckpt"), SaveSteps = 1, LearningRate = 1e-3 }, dir.File("base"), _ => { }).Run();

        var pod = Request(dir, "part") with { CheckpointDir = dir.File("ckpt"), SaveSteps = 100, ResumeFrom = FineTuneRequest.ResumeLatest };
        var firstEvents = new List<EngineEvent>();
        Assert.Throws<TrainingInterruptedException>(() =>
            new FineTuner(pod, dir.File("base"), firstEvents.Add, () => firstEvents.OfType<TrainEvent>().Count() == 3).Run());
        var secondEvents = new List<EngineEvent>();
        var resumed = new FineTuner(pod, dir.File("base"), secondEvents.Add).Run();

        Assert.Equal(6, other.Steps);
        Assert.Equal(1, firstEvents.OfType<TrainEvent>().First().Step);
        Assert.Contains(firstEvents.OfType<LogEvent>(), l => l.Message.Contains("3 checkpoint(s)", StringComparison.Ordinal) && l.Message.Contains("another run", StringComparison.Ordinal));
        Assert.Equal(3, resumed.ResumedFromStep);
        Assert.Equal(4, secondEvents.OfType<TrainEvent>().First().Step);
        AssertSameAdapter(dir.File("full"), dir.File("part"), 1e-6);
        // The folder holds one run: the first checkpoint of this run (step 3, on SIGTERM) removed the other run's
        // 4, 5, 6 (its step numbers would collide with this run's); the resumed pod added its final checkpoint.
        Assert.Contains(firstEvents.OfType<LogEvent>(), l => l.Message.Contains("removed 3 checkpoint(s) of another run", StringComparison.Ordinal));
        Assert.Equal([6, 3], FineTuner.Checkpoints(dir.File("ckpt")).Select(c => c.Step));
        Assert.Equal(RunOf(dir.File("ckpt"), 3), RunOf(dir.File("ckpt"), 6));
    }

    [Fact]
    public void Does_start_at_step_0_when_latest_finds_no_checkpoint_and_needs_a_checkpoint_dir()
    {
        using var dir = Setup();
        var events = new List<EngineEvent>();
        var fresh = new FineTuner(Request(dir, "fresh") with { CheckpointDir = dir.File("empty"), ResumeFrom = FineTuneRequest.ResumeLatest, MaxSteps = 2 },
            dir.File("base"), events.Add).Run();

        Assert.Null(fresh.ResumedFromStep);
        Assert.Contains(events.OfType<LogEvent>(), l => l.Message.Contains("no checkpoint in", StringComparison.Ordinal));
        var args = (Request(dir, "x") with { ResumeFrom = FineTuneRequest.ResumeLatest }).ToArgs();
        var error = Assert.Throws<ProtocolArgumentException>(() => FineTuneRequest.Parse(args));
        Assert.Equal("--resume-from", error.Argument);
        Assert.Contains("--checkpoint-dir", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_fingerprint_the_data_and_the_trajectory_settings_but_not_the_device_or_outputs()
    {
        using var dir = Setup();
        var request = Request(dir, "a");
        var data = FineTuner.DatasetDigest(request.Dataset);
        var run = FineTuner.RunFingerprint(request, 0, data);

        Assert.Equal(run, FineTuner.RunFingerprint(request with { Device = ComputeDevice.Cuda, GradientCheckpointing = true, CudaGraph = true, Out = dir.File("b"), CheckpointDir = "/x", SaveSteps = 7, Shards = 2, ShardDevices = ["cuda:0", "cuda:0"] }, 0, data));
        Assert.NotEqual(run, FineTuner.RunFingerprint(request with { LearningRate = request.LearningRate * 2 }, 0, data));
        Assert.NotEqual(run, FineTuner.RunFingerprint(request with { Seed = request.Seed + 1 }, 0, data));
        Assert.NotEqual(run, FineTuner.RunFingerprint(request, 1, data));
        File.AppendAllText(request.Dataset, "{\"instruction\": \"one more\", \"output\": \"line\"}\n");
        Assert.NotEqual(data, FineTuner.DatasetDigest(request.Dataset));
    }

    private static string RunOf(string root, int step) =>
        (string)System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(root, FineTuner.CheckpointPrefix + step, FineTuner.StateFile)))!["run"]!;

    [Fact]
    public void Does_compute_the_same_update_with_gradient_checkpointing()
    {
        using var dir = Setup();
        var request = Request(dir, "plain") with { MaxSteps = 2 };
        new FineTuner(request, dir.File("base"), _ => { }).Run();
        new FineTuner(request with { Out = dir.File("recomputed"), GradientCheckpointing = true }, dir.File("base"), _ => { }).Run();

        AssertSameAdapter(dir.File("plain"), dir.File("recomputed"), 1e-5);
        using var adapter = PeftAdapter.Read(dir.File("plain"));
        Assert.True(adapter.Modules.Values.All(w => w.B.abs().max().item<float>() > 0), "every B moved off zero");
    }

    [Fact]
    public void Does_report_progress_and_a_bounded_result_through_the_cli()
    {
        using var dir = Setup();
        var request = Request(dir, "adapter") with { ResultFile = dir.File("result.json"), Merge = true, GgufAdapter = true };
        var stdout = new StringWriter();

        var exit = EngineCli.Run([.. request.ToArgs()], stdout, new StringWriter(), TimeProvider.System);

        Assert.Equal(0, exit);
        var json = File.ReadAllText(dir.File("result.json"));
        Assert.True(json.Length <= EngineResult.MaxBytes);
        var result = EngineResult.Parse(json)!;
        Assert.True(result.Ok);
        Assert.Equal("peft-lora", result.Artifact!.Format);
        Assert.Equal(new DirectoryInfo(dir.File("adapter")).EnumerateFiles("adapter_*").Sum(f => f.Length), result.Artifact.Bytes);
        Assert.True(result.Metrics!["evalPerplexity"] > 1);
        var trains = stdout.ToString().Split('\n').Select(EngineEvent.TryParse).OfType<TrainEvent>().ToList();
        Assert.Equal(Enumerable.Range(1, 6), trains.Select(t => t.Step));
        Assert.All(trains, t => Assert.True(t.PeakMemoryBytes > 0 && t.EtaSeconds >= 0 && t.LearningRate > 0));
        Assert.True(File.Exists(Path.Combine(dir.File("adapter"), "merged", "model.safetensors")));
        Assert.Equal(2 * 3 * 2, Lowbit.Engine.Formats.GgufFile.Read(Path.Combine(dir.File("adapter"), "adapter.gguf")).Tensors.Count);

        // eval --adapter applies it: the merged checkpoint and base+adapter score the same text the same.
        File.WriteAllText(dir.File("eval.txt"), "Count to 5\n1 2 3 4 5\nCount to 3\n1 2 3\n");
        double Perplexity(string model, string? adapter)
        {
            var evalArgs = new EvalRequest { Model = model, Text = dir.File("eval.txt"), Context = 64, Device = ComputeDevice.Cpu, ResultFile = dir.File("eval.json"), Adapter = adapter }.ToArgs();
            Assert.Equal(0, EngineCli.Run([.. evalArgs], new StringWriter(), new StringWriter(), TimeProvider.System));
            return EngineResult.Parse(File.ReadAllText(dir.File("eval.json")))!.Metrics!["perplexity"];
        }
        var plain = Perplexity(dir.File("base"), null);
        var adapted = Perplexity(dir.File("base"), dir.File("adapter"));
        var merged = Perplexity(Path.Combine(dir.File("adapter"), "merged"), null);
        Assert.NotEqual(plain, adapted, 4);
        Assert.InRange(merged / adapted, 0.9999, 1.0001);
    }

    [Theory]
    [InlineData("{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": 1, \"output\": \"b\"}\n", "line 2")]
    [InlineData("", "no examples")]
    public void Does_exit_42_naming_the_problem_for_bad_datasets(string content, string expected)
    {
        using var dir = Setup();
        File.WriteAllText(dir.File("data.jsonl"), content);
        var request = Request(dir, "adapter") with { ResultFile = dir.File("result.json") };

        var exit = EngineCli.Run([.. request.ToArgs()], new StringWriter(), new StringWriter(), TimeProvider.System);

        Assert.Equal(EngineExitCodes.BadInput, exit);
        Assert.Contains(expected, EngineResult.Parse(File.ReadAllText(dir.File("result.json")))!.Error!.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_refuse_qlora_on_a_16_bit_base()
    {
        using var dir = Setup();
        var ex = Assert.Throws<EngineInputException>(() => new FineTuner(Request(dir, "a") with { Method = FineTuneMethod.Qlora }, dir.File("base"), _ => { }).Run());
        Assert.Contains("quantize", ex.Message, StringComparison.Ordinal);
    }
}
