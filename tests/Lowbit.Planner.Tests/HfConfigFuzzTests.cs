using Lowbit.Testing;

namespace Lowbit.Planner.Tests;

public sealed class HfConfigFuzzTests
{
    [Fact]
    public void Does_answer_every_mutated_config_json_with_an_architecture_or_a_plan_input_error()
    {
        var seed = System.Text.Encoding.UTF8.GetBytes(Fixtures.HfConfig("llama-2-70b.json"));
        var run = Fuzzer.Run(seed, 25, input => HfConfigParser.Parse(System.Text.Encoding.UTF8.GetString(input)), ex => ex is PlanInputException);
        Assert.True(run >= 50);
    }
}
