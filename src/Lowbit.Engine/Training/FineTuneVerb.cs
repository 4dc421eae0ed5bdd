using System.Globalization;
using System.Runtime.InteropServices;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Sources;
using Lowbit.Engine.Training;

namespace Lowbit.Engine.Training;

/// <summary><c>finetune</c>: LoRA / QLoRA / full fine-tuning (see <see cref="FineTuner"/>); SIGTERM checkpoints and stops.</summary>
public static class FineTuneVerb
{
    public static EngineResult Run(FinetuneRequest request, VerbContext context)
    {
        using var http = ModelSource.CreateHttpClient();
        var directory = new ModelSource(http, context.Emit, context.Time).Resolve(request.BaseModel, request.Revision, weights: true);
        var stop = false;
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, signal =>
        {
            // Let the current step finish, write a checkpoint, then exit.
            signal.Cancel = true;
            stop = true;
        });
        var outcome = new FineTuner(request, directory, context.Emit, () => Volatile.Read(ref stop)).Run();
        context.Stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"finetune: {outcome.Steps} steps, final loss {outcome.FinalLoss:F4}, eval loss {outcome.EvalLoss?.ToString("F4", CultureInfo.InvariantCulture) ?? "-"}, {outcome.TokensPerSecond:F0} tokens/s, peak {outcome.PeakMemoryBytes / (1 << 20)} MiB -> {outcome.OutputPath}"));
        var metrics = new Dictionary<string, double>
        {
            ["steps"] = outcome.Steps,
            ["finalLoss"] = outcome.FinalLoss,
            ["tokensTrained"] = outcome.TokensTrained,
            ["trainSeconds"] = Math.Round(outcome.TrainSeconds, 3),
            ["tokensPerSecond"] = Math.Round(outcome.TokensPerSecond, 1),
            ["peakMemoryBytes"] = outcome.PeakMemoryBytes,
            ["trainableParameters"] = outcome.TrainableParameters,
            ["trainBlocks"] = outcome.TrainBlocks,
            ["evalBlocks"] = outcome.EvalBlocks,
        };
        if (outcome.EvalLoss is { } evalLoss)
        {
            metrics["evalLoss"] = evalLoss;
            metrics["evalPerplexity"] = outcome.EvalPerplexity!.Value;
        }
        if (outcome.ResumedFromStep is { } resumed)
        {
            metrics["resumedFromStep"] = resumed;
        }
        var info = new Dictionary<string, string>
        {
            ["method"] = ProtocolNames.Of(request.Method),
            ["device"] = TorchRuntime.ResolveDevice(request.Device).type.ToString().ToLowerInvariant(),
        };
        if (outcome.MergedPath is { } merged)
        {
            info["merged"] = merged;
        }
        if (outcome.GgufAdapterPath is { } gguf)
        {
            info["ggufAdapter"] = gguf;
        }
        return new EngineResult
        {
            Ok = true,
            Verb = EngineVerbs.Finetune,
            DurationSeconds = context.ElapsedSeconds,
            Artifact = new ArtifactReport
            {
                Uri = outcome.OutputPath,
                Format = request.Method == FinetuneMethod.Full ? "hf-safetensors" : "peft-lora",
                Bytes = outcome.OutputBytes,
            },
            Quality = outcome.EvalPerplexity is { } ppl ? new QualityReport { PerplexityAfter = ppl } : null,
            Metrics = metrics,
            Info = info,
        };
    }
}
