using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Protocol.Tests;

public class RequestRoundTripTests
{
    public static TheoryData<EngineRequest> Requests() =>
    [
        new InspectRequest { Model = "meta-llama/Llama-2-7b-hf" },
        new InspectRequest { Model = "/models/tiny", Revision = "a1b2c3", ResultFile = "/tmp/r.json" },
        new QuantizeRequest { Model = "org/m", Method = QuantizationMethod.Hqq, Bits = 4, GroupSize = 64, Out = "/out", Formats = ["lowbit", "gguf-q4_k"] },
        new QuantizeRequest
        {
            Model = "https://example.com/models/x", Revision = "v1", Method = QuantizationMethod.Gptq, Bits = 8, GroupSize = -1,
            Formats = ["gptq"], Out = "/o u t", Calibration = "/c.jsonl", CalibrationSamples = 128, CalibrationLength = 2048,
            EvalText = "/e.txt", Device = ComputeDevice.Cuda, ResultFile = "/dev/termination-log",
        },
        new QuantizeRequest { Model = "m", Method = QuantizationMethod.Rtn, TargetBitsPerWeight = 2.5, GroupSize = 128, Out = "o", Device = ComputeDevice.Cpu },
        new QuantizeRequest { Model = "m", Method = QuantizationMethod.Rtn, Bits = 2, TargetBitsPerWeight = 1.0 / 3 + 2, Out = "o" },
        new QuantizeRequest { Model = "m", Method = QuantizationMethod.Hqq, Bits = 4, Out = "o", Formats = ["lowbit", "gguf-q8_0"], QuantizeHead = true },
        new EvalRequest { Model = "m", Text = "t.txt" },
        new EvalRequest { Model = "m", Text = "t.txt", Context = 2048, Stride = 1, MaxTokens = 100_000, Device = ComputeDevice.Cpu, ResultFile = "r" },
        new EvalRequest { Model = "m", Text = "t.txt", Adapter = "/adapters/a" },
        new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Qlora, Dataset = "d.jsonl", Out = "o" },
        new FineTuneRequest
        {
            BaseModel = "b", Revision = "main", Method = FineTuneMethod.Full, R = 1, Alpha = 0.5, Dropout = 0, TargetModules = ["q_proj", "k_proj", "down_proj"],
            Dataset = "d", DatasetFormat = DatasetFormat.Chat, Epochs = 3, MaxSteps = 1000, LearningRate = 1.5e-5, MicroBatch = 4,
            GradAccumulation = 8, SeqLength = 4096, CheckpointDir = "/ckpt", ResumeFrom = "/ckpt/step-100", Seed = 7, Out = "o",
            Device = ComputeDevice.Cuda, ResultFile = "r",
        },
        new FineTuneRequest
        {
            BaseModel = "b", Method = FineTuneMethod.Lora, Dataset = "d.txt", DatasetFormat = DatasetFormat.Text, Out = "o",
            SaveSteps = 50, EvalSplit = 0, LrScheduler = LrScheduler.Cosine, WarmupSteps = 10, MaxGradNorm = 0.3, WeightDecay = 0.01,
            GradientCheckpointing = true, Rslora = true, Merge = true, GgufAdapter = true, CudaGraph = true,
        },
        new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Lora, Dataset = "d", Out = "o", Shards = 4 },
        new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Qlora, Dataset = "d", Out = "o", Shards = 2, ShardDevices = ["cuda:0", "cuda:0"], Device = ComputeDevice.Cuda },
        new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Full, Dataset = "d", Out = "o", Shards = 3, ShardDevices = ["cpu", "cpu", "cpu"] },
        new ServeRequest { Model = "m" },
        new ServeRequest { Model = "m", Revision = "r", Adapters = ["/a/one", "/a/two"], Port = 1, MaxContext = 131072, MaxConcurrency = 256, ServedName = "tiny", Device = ComputeDevice.Cpu, ApiKeyFile = "/run/key" },
        new ServeRequest { Model = "m", MaxContext = 320, MaxConcurrency = 64, MaxNumBatchedTokens = 2048, Device = ComputeDevice.Cuda },
        new ServeRequest { Model = "m", Shards = 4 },
        new ServeRequest { Model = "m", Shards = 2, ShardDevices = ["cuda:0", "cuda:0"], Device = ComputeDevice.Cuda },
        new ServeRequest { Model = "m", Shards = 3, ShardDevices = ["cpu", "cpu", "cpu"] },
    ];

    [Theory]
    [MemberData(nameof(Requests))]
    public void Does_round_trip_when_parsing_to_args(EngineRequest request)
    {
        var args = request.ToArgs();

        var parsed = EngineRequest.Parse(args);

        Assert.Equal(request.Verb, args[0]);
        Assert.Equal(request, parsed);
        Assert.Equal(args, parsed.ToArgs());
    }

    [Fact]
    public void Does_write_kebab_case_flags_in_order_when_quantizing()
    {
        var request = new QuantizeRequest
        {
            Model = "SRC", Method = QuantizationMethod.Hqq, Bits = 4, GroupSize = 64, Formats = ["lowbit", "gguf-q4_k"], Out = "DIR",
        };

        Assert.Equal(
            ["quantize", "--model", "SRC", "--method", "hqq", "--bits", "4", "--group-size", "64", "--format", "lowbit,gguf-q4_k", "--out", "DIR"],
            request.ToArgs());
    }

    [Fact]
    public void Does_apply_defaults_when_optional_arguments_are_absent()
    {
        var eval = EvalRequest.Parse(["eval", "--model", "m", "--text", "t"]);
        var quantize = QuantizeRequest.Parse(["quantize", "--model", "m", "--method", "rtn", "--bits", "8", "--out", "o"]);
        var finetune = FineTuneRequest.Parse(["finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o"]);

        Assert.Equal(512, eval.Context);
        Assert.Null(eval.Stride);
        Assert.Null(eval.Device);
        Assert.Equal(64, quantize.GroupSize);
        Assert.Equal(["lowbit"], quantize.Formats);
        Assert.Equal(["q_proj", "v_proj"], finetune.TargetModules);
        Assert.Equal(16, finetune.R);
        Assert.Equal(2e-4, finetune.LearningRate);
    }

    [Fact]
    public void Does_compare_lists_by_content_when_records_come_from_arrays()
    {
        var a = new ServeRequest { Model = "m", Adapters = ["x", "y"] };
        var b = new ServeRequest { Model = "m", Adapters = new List<string> { "x", "y" } };

        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
        Assert.NotEqual(a, b with { Adapters = ["y", "x"] });
    }

    [Fact]
    public void Does_leave_shards_off_the_command_line_when_not_split()
    {
        var args = new ServeRequest { Model = "m" }.ToArgs();
        var parsed = ServeRequest.Parse(["serve", "--model", "m", "--shards", "2", "--shard-devices", "cuda:1,cuda:0"]);

        Assert.DoesNotContain("--shards", args);
        Assert.Equal(1, ServeRequest.Parse(args).Shards);
        Assert.Equal(2, parsed.Shards);
        Assert.Equal(["cuda:1", "cuda:0"], parsed.ShardDevices);
    }

    [Fact]
    public void Does_leave_shards_off_the_finetune_command_line_when_not_split()
    {
        var args = new FineTuneRequest { BaseModel = "b", Method = FineTuneMethod.Lora, Dataset = "d", Out = "o" }.ToArgs();
        var parsed = FineTuneRequest.Parse(["finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--shards", "2", "--shard-devices", "cuda:1,cuda:0"]);

        Assert.DoesNotContain("--shards", args);
        Assert.DoesNotContain("--shard-devices", args);
        Assert.Equal(1, FineTuneRequest.Parse(args).Shards);
        Assert.Equal(2, parsed.Shards);
        Assert.Equal(["cuda:1", "cuda:0"], parsed.ShardDevices);
        Assert.Equal(["cuda:0", "cuda:1"], (parsed with { ShardDevices = [] }).ResolveShardDevices(cuda: true));
    }

    [Fact]
    public void Does_default_shard_devices_to_one_gpu_each_on_cuda_and_cpu_otherwise()
    {
        var request = new ServeRequest { Model = "m", Shards = 3 };

        Assert.Equal(["cuda:0", "cuda:1", "cuda:2"], request.ResolveShardDevices(cuda: true));
        Assert.Equal(["cpu", "cpu", "cpu"], request.ResolveShardDevices(cuda: false));
        Assert.Equal(["cuda:0", "cuda:0"], (request with { Shards = 2, ShardDevices = ["cuda:0", "cuda:0"] }).ResolveShardDevices(cuda: true));
    }
}
