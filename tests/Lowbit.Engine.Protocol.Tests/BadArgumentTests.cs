using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Protocol.Tests;

public class BadArgumentTests
{
    [Theory]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "awq", "--bits", "4", "--out", "o" }, "--method", "rtn, hqq, gptq")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "5", "--out", "o" }, "--bits", "2, 3, 4, 8")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--out", "o" }, "--bits", "--target-bpw")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "4", "--group-size", "48", "--out", "o" }, "--group-size", "-1, 32, 64, 128, 256")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "4", "--format", "lowbit,onnx", "--out", "o" }, "--format", "gguf-q4_k")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "3", "--format", "gptq", "--out", "o" }, "--format", "--bits 4|8")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "gptq", "--bits", "4", "--out", "o" }, "--calibration", "JSONL")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "4", "--format", "lowbit,gptq", "--quantize-head", "true", "--out", "o" }, "--quantize-head", "--format lowbit")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "4", "--quantize-head", "yes", "--out", "o" }, "--quantize-head", "true or false")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--bits", "4" }, "--out", "output directory")]
    [InlineData(new[] { "quantize", "--method", "rtn", "--bits", "4", "--out", "o" }, "--model", "Hugging Face repo id")]
    [InlineData(new[] { "quantize", "--model", "m", "--method", "rtn", "--target-bpw", "nan", "--out", "o" }, "--target-bpw", "1.5 to 8")]
    [InlineData(new[] { "eval", "--model", "m", "--text", "t", "--device", "tpu" }, "--device", "cpu, cuda")]
    [InlineData(new[] { "eval", "--model", "m", "--text", "t", "--context", "128", "--stride", "256" }, "--stride", "from 1 to 128")]
    [InlineData(new[] { "eval", "--model", "m", "--text", "t", "--colour", "blue" }, "--colour", "--context")]
    [InlineData(new[] { "eval", "--model", "m", "--text" }, "--text", "a value after --text")]
    [InlineData(new[] { "eval", "--model", "m", "--model", "n", "--text", "t" }, "--model", "one value")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--target-modules", "q_proj,lm_head" }, "--target-modules", "gate_proj")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--dataset-format", "csv" }, "--dataset-format", "alpaca, chat, text")]
    [InlineData(new[] { "serve", "--model", "m", "--port", "70000" }, "--port", "1 to 65535")]
    [InlineData(new[] { "serve", "--model", "m", "--max-num-batched-tokens", "0" }, "--max-num-batched-tokens", "1 to 1048576")]
    [InlineData(new[] { "serve", "--model", "m", "--max-num-batched-tokens", "4000000000" }, "--max-num-batched-tokens", "1 to 1048576")]
    [InlineData(new[] { "serve", "--model", "m", "--max-num-batched-tokens", "2k" }, "--max-num-batched-tokens", "1 to 1048576")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "0" }, "--shards", "1 to 16")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "17" }, "--shards", "1 to 16")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "2", "--shard-devices", "cuda:0" }, "--shard-devices", "one device per shard")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "2", "--shard-devices", "cuda:0,gpu1" }, "--shard-devices", "cuda:N")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "2", "--shard-devices", "cuda:0,cuda:x" }, "--shard-devices", "cuda:N")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "2", "--shard-devices", "cpu,cuda:0" }, "--shard-devices", "all cpu or all cuda")]
    [InlineData(new[] { "serve", "--model", "m", "--shards", "2", "--shard-devices", "cuda:0,cuda:1", "--device", "cpu" }, "--shard-devices", "cuda:0,cuda:1")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--shards", "0" }, "--shards", "1 to 16")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "qlora", "--dataset", "d", "--out", "o", "--shards", "two" }, "--shards", "1 to 16")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--shards", "3", "--shard-devices", "cuda:0,cuda:1" }, "--shard-devices", "one device per shard")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--shards", "2", "--shard-devices", "cuda:0,gpu1" }, "--shard-devices", "cuda:N")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "full", "--dataset", "d", "--out", "o", "--shards", "2", "--shard-devices", "cpu,cuda:0" }, "--shard-devices", "all cpu or all cuda")]
    [InlineData(new[] { "finetune", "--base-model", "b", "--method", "lora", "--dataset", "d", "--out", "o", "--shards", "2", "--shard-devices", "cpu,cpu", "--device", "cuda" }, "--shard-devices", "cpu,cpu")]
    [InlineData(new[] { "train", "--model", "m" }, "verb", "inspect, quantize, finetune, serve, eval")]
    [InlineData(new string[0], "verb", "inspect, quantize")]
    public void Does_name_the_argument_and_accepted_values_when_input_is_bad(string[] args, string argument, string acceptedFragment)
    {
        var ex = Assert.Throws<ProtocolArgumentException>(() => EngineRequest.Parse(args));

        Assert.Equal(argument, ex.Argument);
        Assert.StartsWith(argument + ":", ex.Message, StringComparison.Ordinal);
        Assert.Contains(acceptedFragment, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_reject_a_different_verb_when_parsing_a_specific_record()
    {
        var ex = Assert.Throws<ProtocolArgumentException>(() => InspectRequest.Parse(["eval", "--model", "m"]));

        Assert.Equal("verb", ex.Argument);
        Assert.Contains("inspect", ex.Message, StringComparison.Ordinal);
    }
}
