using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Generation;
using Lowbit.Engine.Models;
using Lowbit.Engine.Protocol;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Cli;

/// <summary>
/// Hidden <c>bench-decode --model DIR [--device cuda] [--prompt-tokens 128] [--new-tokens 128] [--repeats 3]</c>:
/// greedy decode at batch 1 with the KV cache; prints one JSON line with the best tokens/s over the repeats
/// (after one warm-up run). Used by gpu/bench.sh next to Hugging Face transformers on the same weights.
/// </summary>
internal static class BenchDecodeVerb
{
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        string? Get(string flag) => Array.IndexOf(args, flag) is var i and >= 0 && i + 1 < args.Length ? args[i + 1] : null;
        int Int(string flag, int fallback) => Get(flag) is { } s ? int.Parse(s, CultureInfo.InvariantCulture) : fallback;
        var directory = Get("--model") ?? throw new ProtocolArgumentException("--model", "required", "a model folder");
        var device = TorchRuntime.ResolveDevice(Get("--device") is { } d && ProtocolNames.TryParse<ComputeDevice>(d, out var parsed) ? parsed : null);
        var promptTokens = Int("--prompt-tokens", 128);
        var newTokens = Int("--new-tokens", 128);
        var repeats = Int("--repeats", 3);
        var load = Stopwatch.StartNew();
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        var dtype = Get("--dtype") is { } name ? ModelIo.ParseDtype(name) : ModelLoading.ComputeDtype(config, device);
        using var model = ModelLoading.Load(directory, dtype, device);
        var loadSeconds = load.Elapsed.TotalSeconds;
        var prompt = Enumerable.Range(0, promptTokens).Select(i => (i * 7919 + 13) % config.VocabSize).ToArray();
        var options = new GenerationOptions { MaxNewTokens = newTokens };
        var best = 0.0;
        var runs = new List<double>();
        for (var r = 0; r <= repeats; r++)
        {
            Synchronize(device);
            var watch = Stopwatch.StartNew();
            var count = TextGenerator.Generate(model, prompt, options, device).Count();
            Synchronize(device);
            var tokensPerSecond = count / watch.Elapsed.TotalSeconds;
            if (r > 0)
            {
                runs.Add(tokensPerSecond);
                best = Math.Max(best, tokensPerSecond);
            }
        }
        var line = JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["engine"] = "lowbit",
            ["device"] = device.type.ToString().ToLowerInvariant(),
            ["dtype"] = ModelIo.DtypeName(dtype),
            ["layers"] = config.NumHiddenLayers,
            ["promptTokens"] = promptTokens,
            ["newTokens"] = newTokens,
            ["loadSeconds"] = Math.Round(loadSeconds, 2),
            ["tokensPerSecond"] = Math.Round(best, 2),
            ["runs"] = runs.Select(v => Math.Round(v, 2)).ToArray(),
        });
        stdout.WriteLine(line);
        stderr.WriteLine($"bench-decode: {best:F1} tokens/s (batch 1, {ModelIo.DtypeName(dtype)}, {device.type})");
        return EngineExitCodes.Ok;
    }

    private static void Synchronize(Device device)
    {
        if (device.type == DeviceType.CUDA)
        {
            cuda.synchronize();
        }
    }
}
