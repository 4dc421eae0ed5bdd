using BenchmarkDotNet.Attributes;
using Lowbit.Planner;

namespace Lowbit.Benchmarks.Planner;

/// <summary>One full placement over the default catalog (every node type × GPU count, ranked, with shortfalls).</summary>
[MemoryDiagnoser]
public class PlannerBenchmarks
{
    private readonly PlanRequest _llama70BInt4 = new()
    {
        Model = ModelPresets.Llama2_70B,
        Workload = new Workload { Mode = WorkloadMode.Inference, Weights = WeightFormat.Parse("int4"), ContextLength = 4096 },
    };

    private readonly PlanRequest _mixtralQlora = new()
    {
        Model = ModelPresets.Mixtral8x7B,
        Workload = new Workload { Mode = WorkloadMode.Qlora, Weights = WeightFormat.Nf4, SequenceLength = 2048, GradientCheckpointing = true },
    };

    private const string LlamaConfig = """
        {"model_type":"llama","hidden_size":8192,"intermediate_size":28672,"num_hidden_layers":80,
         "num_attention_heads":64,"num_key_value_heads":8,"vocab_size":32000,"max_position_embeddings":4096}
        """;

    [Benchmark(Baseline = true, Description = "Plan Llama-2-70B int4 inference")]
    public PlanResult PlanLlama70BInt4() => PlacementPlanner.Plan(_llama70BInt4);

    [Benchmark(Description = "Plan Mixtral-8x7B QLoRA (incl. multi-node)")]
    public PlanResult PlanMixtralQlora() => PlacementPlanner.Plan(_mixtralQlora);

    [Benchmark(Description = "Parse config.json + plan")]
    public PlanResult ParseAndPlan() => PlacementPlanner.Plan(_llama70BInt4 with { Model = HfConfigParser.Parse(LlamaConfig) });
}
