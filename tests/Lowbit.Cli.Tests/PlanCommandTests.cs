using System.Diagnostics;
using System.Text.Json;

namespace Lowbit.Cli.Tests;

/// <summary>
/// <c>lowbit plan</c> run as a process (the built lowbit.dll next to this test assembly), so stdout,
/// stderr and the exit code are exactly what a user gets, and no test shares the process console.
/// </summary>
public sealed class PlanCommandTests
{
    private sealed record Run(int ExitCode, string Out, string Err);

    private static Run Plan(params string[] args)
    {
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add("exec");
        start.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "lowbit.dll"));
        start.ArgumentList.Add("plan");
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        return new Run(process.ExitCode, stdout.Result, stderr.Result);
    }

    private static JsonElement Json(Run run)
    {
        Assert.True(run.ExitCode is ExitCodes.Ok or ExitCodes.NoFit, $"exit {run.ExitCode}: {run.Err}");
        return JsonDocument.Parse(run.Out).RootElement;
    }

    private static string RepoPath(params string[] parts)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "Operator.sln")))
        {
            dir = dir.Parent;
        }
        return Path.Combine([dir!.FullName, .. parts]);
    }

    [Fact]
    public void Does_print_the_documented_json_for_Llama2_70B_int4()
    {
        var json = Json(Plan("--model", "llama-2-70b", "--mode", "inference", "--weights", "int4", "--context", "4096", "--batch", "1", "--output", "json"));
        Assert.Equal(68_976_648_192L, json.GetProperty("model").GetProperty("parameters").GetInt64());
        var memory = json.GetProperty("memory");
        var breakdown = memory.GetProperty("breakdown");
        var parts = new[] { "weights", "kvCache", "activations", "optimizer", "gradients", "overhead" }.Sum(k => breakdown.GetProperty(k).GetDouble());
        Assert.Equal(memory.GetProperty("totalGiB").GetDouble(), parts, 0.05);
        Assert.Equal(2.5, breakdown.GetProperty("kvCache").GetDouble() * 2, 1); // 1.25 GiB for 4096 tokens
        Assert.InRange(memory.GetProperty("totalGiB").GetDouble(), 33, 42);
        Assert.True(memory.GetProperty("perGpuGiB").GetDouble() <= memory.GetProperty("totalGiB").GetDouble());

        var placement = json.GetProperty("placement");
        var gpus = placement.GetProperty("gpusPerReplica").GetInt32();
        var perGpuHourly = placement.GetProperty("hourlyUsd").GetDouble() / gpus;
        Assert.True(placement.GetProperty("hourlyUsd").GetDouble() <= 2.87);
        Assert.True(perGpuHourly > 0);
        Assert.False(string.IsNullOrEmpty(placement.GetProperty("nodeType").GetString()));
        Assert.False(string.IsNullOrEmpty(placement.GetProperty("gpuModel").GetString()));
        Assert.True(placement.GetProperty("tokensPerSecond").GetDouble() > 0);
        Assert.True(placement.GetProperty("usdPerMillionTokens").GetDouble() > 0);
        Assert.Equal("nvidia.com/gpu", placement.GetProperty("resourceName").GetString());

        var alternatives = json.GetProperty("alternatives").EnumerateArray().ToList();
        Assert.True(alternatives.Count > 10);
        var prices = alternatives.Select(a => a.GetProperty("hourlyUsd").GetDouble()).ToList();
        Assert.Equal(prices.Order(), prices);
        var firstFit = alternatives.First(a => a.GetProperty("fits").GetBoolean());
        Assert.Equal(placement.GetProperty("nodeType").GetString(), firstFit.GetProperty("nodeType").GetString());
        Assert.All(alternatives.TakeWhile(a => !a.GetProperty("fits").GetBoolean()), a => Assert.True(
            a.GetProperty("shortfallGiB").GetDouble() > 0 || a.GetProperty("reason").GetString() != "InsufficientMemory"));
    }

    [Fact]
    public void Does_print_a_table_with_the_choice_and_the_shortfalls()
    {
        var run = Plan("--model", "starcoder-15.5b", "--weights", "int8", "--context", "8192", "--gpu-types", "t4,a100-40gb");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("StarCoder-15.5B", run.Out, StringComparison.Ordinal);
        Assert.Contains("2× T4-16GB at $0.70/h", run.Out, StringComparison.Ordinal);
        Assert.Contains("1× T4-16GB short by", run.Out, StringComparison.Ordinal);
        Assert.Contains("chosen", run.Out, StringComparison.Ordinal);
        Assert.Contains("KV cache", run.Out, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_say_a_training_plan_on_several_gpus_is_a_pipeline_split_in_one_pod()
    {
        var table = Plan("--model", "llama-2-70b", "--mode", "lora", "--weights", "bf16", "--seq", "2048", "--gradient-checkpointing");
        Assert.Equal(ExitCodes.Ok, table.ExitCode);
        Assert.Matches(@"at \$[0-9.]+/h \(pipeline split over [248] GPUs\)", table.Out);
        Assert.Contains("(heaviest stage)", table.Out, StringComparison.Ordinal);

        var placement = Json(Plan("--model", "llama-2-70b", "--mode", "lora", "--weights", "bf16", "--seq", "2048", "--gradient-checkpointing", "--output", "json")).GetProperty("placement");
        var gpus = placement.GetProperty("gpusPerReplica").GetInt32();
        Assert.Equal((1, gpus, 1), (placement.GetProperty("nodes").GetInt32(), placement.GetProperty("pipelineStages").GetInt32(), placement.GetProperty("tensorParallel").GetInt32()));
        Assert.Equal($"pipeline split over {gpus} GPUs", placement.GetProperty("split").GetString());
    }

    [Fact]
    public void Does_read_a_config_json_path()
    {
        var json = Json(Plan("--model", RepoPath("tests", "fixtures", "hf-configs", "mixtral-8x7b.json"), "--weights", "int4", "--output", "json"));
        Assert.Equal(8, json.GetProperty("model").GetProperty("experts").GetInt32());
        Assert.InRange(json.GetProperty("model").GetProperty("parameters").GetInt64() / 1e9, 46.2, 47.2);
    }

    [Fact]
    public void Does_plan_training_with_optimizer_and_gradients_in_the_breakdown()
    {
        var json = Json(Plan("--model", "llama-3-8b", "--mode", "lowbit-full", "--seq", "2048", "--gradient-checkpointing", "--output", "json"));
        var breakdown = json.GetProperty("memory").GetProperty("breakdown");
        Assert.True(breakdown.GetProperty("optimizer").GetDouble() > 0);
        Assert.True(breakdown.GetProperty("gradients").GetDouble() > 0);
        Assert.True(json.GetProperty("memory").GetProperty("totalGiB").GetDouble() < 22.8);
        Assert.Equal("training", json.GetProperty("placement").GetProperty("throughputKind").GetString());
    }

    [Fact]
    public void Does_apply_a_yaml_catalog_override()
    {
        var json = Json(Plan("--model", "llama-2-70b", "--weights", "fp16", "--catalog", RepoPath("tests", "fixtures", "catalog", "seed-gcp.yaml"), "--output", "json"));
        var placement = json.GetProperty("placement");
        Assert.Equal("a100-80gb", placement.GetProperty("nodeType").GetString());
        Assert.Equal(2, placement.GetProperty("gpusPerReplica").GetInt32());
        Assert.Equal(7.70, placement.GetProperty("hourlyUsd").GetDouble(), 6);
        Assert.Equal("nvidia-a100-80gb", placement.GetProperty("nodeSelector").GetProperty("cloud.google.com/gke-accelerator").GetString());
        Assert.All(json.GetProperty("alternatives").EnumerateArray(), a =>
            Assert.Contains(a.GetProperty("nodeType").GetString(), new[] { "t4", "a100-40gb", "a100-80gb" }));
    }

    [Fact]
    public void Does_exit_no_fit_with_the_shortfall_when_nothing_fits_the_budget()
    {
        var run = Plan("--model", "llama-2-70b", "--weights", "fp16", "--max-usd-per-hour", "2", "--output", "json");
        Assert.Equal(ExitCodes.NoFit, run.ExitCode);
        Assert.Contains("short by", run.Err, StringComparison.Ordinal);
        var json = Json(run);
        Assert.False(json.GetProperty("fits").GetBoolean());
        Assert.Equal(JsonValueKind.Null, json.GetProperty("placement").ValueKind);
        Assert.True(json.GetProperty("noFit").GetProperty("shortfallGiB").GetDouble() > 0);
        Assert.NotEmpty(json.GetProperty("noFit").GetProperty("fitsWithoutConstraints").EnumerateArray());
    }

    [Fact]
    public void Does_size_a_quantized_head_at_the_layers_bits_when_asked()
    {
        // Llama-2-7B's untied 32,000 × 4,096 head at int4 g64 (4.5 bits with its fp16 scale and zero) instead of 16 bits:
        // 188,416,000 bytes (0.175 GiB) less; a tied head (StarCoder) is the embedding table and stays as it was.
        double Weights(params string[] args) =>
            Json(Plan([.. args, "--weights", "int4", "--group-size", "64", "--output", "json"])).GetProperty("memory").GetProperty("breakdown").GetProperty("weights").GetDouble();
        var dense = Weights("--model", "llama-2-7b");
        var quantized = Weights("--model", "llama-2-7b", "--quantize-head");
        Assert.Equal(188_416_000 / 1073741824.0, dense - quantized, 0.011);
        Assert.Equal(Weights("--model", "starcoder-15.5b"), Weights("--model", "starcoder-15.5b", "--quantize-head"));
    }

    [Theory]
    [InlineData("--model|llama-2-7b|--weights|bf16|--quantize-head", "quantize-head", "int4")]
    [InlineData("--model|gpt-5", "model", "llama-2-70b")]
    [InlineData("--model|llama-2-7b|--weights|int5", "weights", "gguf-q4_k_m")]
    [InlineData("--model|llama-2-7b|--mode|pretrain", "mode", "lowbit-full")]
    [InlineData("--model|llama-2-7b|--runtime|tgi", "runtime", "llamacpp")]
    [InlineData("--model|llama-2-7b|--output|yaml", "output", "table, json")]
    [InlineData("--model|llama-2-7b|--gpu-types|b200", "gpu-types", "h200-141gb")]
    [InlineData("--model|llama-2-7b|--frobnicate", "plan", "--gradient-checkpointing")]
    [InlineData("--model|llama-2-7b|--context|lots", "context", "not an integer")]
    [InlineData("--model|llama-2-7b|--mode|full|--weights|int4", "weights", "lowbit-full")]
    [InlineData("--weights|int4", "model", "tinyllama-1.1b")]
    [InlineData("--model|missing/config.json", "model", "does not exist")]
    public void Does_exit_bad_input_naming_the_field_and_accepted_values(string args, string field, string listed)
    {
        var run = Plan(args.Split('|'));
        Assert.Equal(ExitCodes.BadInput, run.ExitCode);
        Assert.Contains($"lowbit plan: {field}:", run.Err, StringComparison.Ordinal);
        Assert.Contains(listed, run.Err, StringComparison.Ordinal);
        Assert.Equal("", run.Out);
    }
}
