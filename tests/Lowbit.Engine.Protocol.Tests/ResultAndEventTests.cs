using System.Text;
using System.Text.Json;
using Lowbit.Engine.Protocol;

namespace Lowbit.Engine.Protocol.Tests;

public class ResultAndEventTests
{
    [Fact]
    public void Does_write_progress_events_with_the_event_name_first()
    {
        var line = new ProgressEvent { Stage = "quantize", Layer = 3, Layers = 32, ElapsedSeconds = 1.5 }.ToJsonLine();

        Assert.Equal("""{"event":"progress","stage":"quantize","layer":3,"layers":32,"elapsedSeconds":1.5}""", line);
    }

    [Fact]
    public void Does_write_train_download_and_log_events_in_camel_case()
    {
        var train = new TrainEvent { Step = 10, TotalSteps = 100, Epoch = 0.1, Loss = 2.25, TokensPerSecond = 1000 }.ToJsonLine();
        var download = new DownloadEvent { File = "model.safetensors", Bytes = 5, TotalBytes = 10, ElapsedSeconds = 0.25 }.ToJsonLine();
        var log = new LogEvent { Level = "info", Message = "loaded" }.ToJsonLine();

        Assert.Equal("""{"event":"train","step":10,"totalSteps":100,"epoch":0.1,"loss":2.25,"tokensPerSecond":1000}""", train);
        Assert.Equal("""{"event":"download","file":"model.safetensors","bytes":5,"totalBytes":10,"elapsedSeconds":0.25}""", download);
        Assert.Equal("""{"event":"log","level":"info","message":"loaded"}""", log);
    }

    [Fact]
    public void Does_parse_event_lines_and_ignore_other_output()
    {
        var parsed = EngineEvent.TryParse("""{"loss":1.5,"event":"train","step":2,"totalSteps":4,"epoch":0.5,"tokensPerSecond":9}""");

        Assert.Equal(new TrainEvent { Step = 2, TotalSteps = 4, Epoch = 0.5, Loss = 1.5, TokensPerSecond = 9 }, parsed);
        Assert.Null(EngineEvent.TryParse("loading weights..."));
        Assert.Null(EngineEvent.TryParse("""{"event":"unknown"}"""));
        Assert.Null(EngineEvent.TryParse("{not json"));
    }

    [Fact]
    public void Does_serialize_the_result_shape_the_operator_reads()
    {
        var result = new EngineResult
        {
            Ok = true,
            Verb = "quantize",
            Artifact = new ArtifactReport { Uri = "/out/model", Format = "lowbit", Bytes = 1234, BitsPerWeight = 4.25, CompressionRatio = 3.76 },
            Quality = new QualityReport { PerplexityBefore = 5.5, PerplexityAfter = 5.75, MeanReconstructionError = 0.01 },
            DurationSeconds = 12.5,
        };

        var json = result.ToJson();

        using var doc = JsonDocument.Parse(json);
        Assert.True(doc.RootElement.GetProperty("ok").GetBoolean());
        Assert.Equal(4.25, doc.RootElement.GetProperty("artifact").GetProperty("bitsPerWeight").GetDouble());
        Assert.Equal(5.75, doc.RootElement.GetProperty("quality").GetProperty("perplexityAfter").GetDouble());
        Assert.False(doc.RootElement.TryGetProperty("error", out _));
        Assert.Equal(result, EngineResult.Parse(json)! with { Metrics = null });
    }

    [Fact]
    public void Does_fit_in_4096_bytes_when_many_layers_are_reported()
    {
        var layers = Enumerable.Range(0, 80 * 7)
            .Select(i => new LayerReport { Name = $"model.layers.{i / 7}.mlp.gate_proj.weight", Bits = i % 3 == 0 ? 2 : 4, Error = i / 1000.0 })
            .ToList();
        var result = new EngineResult
        {
            Ok = true,
            Verb = "quantize",
            Layers = layers,
            Metrics = Enumerable.Range(0, 50).ToDictionary(i => $"metric{i}", i => i * 1.5),
            DurationSeconds = 1,
        };

        var json = result.ToJson();
        var parsed = EngineResult.Parse(json)!;

        Assert.True(Encoding.UTF8.GetByteCount(json) <= EngineResult.MaxBytes, $"{Encoding.UTF8.GetByteCount(json)} bytes");
        Assert.NotNull(parsed.Layers);
        Assert.Equal(layers.Count, parsed.Layers!.Count + parsed.LayersOmitted);
        Assert.Equal(layers.Max(l => l.Error), parsed.Layers![0].Error);
    }

    [Fact]
    public void Does_fit_in_4096_bytes_when_the_error_message_is_huge()
    {
        var result = EngineResult.Failed("eval", ErrorReasons.RuntimeError, new string('x', 20_000) + "é", 3);

        var json = result.ToJson();

        Assert.True(Encoding.UTF8.GetByteCount(json) <= EngineResult.MaxBytes);
        Assert.Equal(ErrorReasons.RuntimeError, EngineResult.Parse(json)!.Error!.Reason);
    }

    [Fact]
    public void Does_list_fail_fast_exit_codes_for_the_pod_failure_policy()
    {
        Assert.Equal([42, 43, 137], EngineExitCodes.FailFast);
        Assert.Equal(0, EngineExitCodes.Ok);
        Assert.Equal(1, EngineExitCodes.Failure);
    }
}
