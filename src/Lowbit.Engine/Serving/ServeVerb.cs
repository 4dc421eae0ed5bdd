using System.Globalization;
using Lowbit.Engine.Cli;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Sources;

namespace Lowbit.Engine.Serving;

/// <summary>
/// <c>serve</c>: resolves the model, starts the OpenAI-compatible server and blocks until SIGTERM/SIGINT; then it
/// stops accepting, lets in-flight requests finish (up to <see cref="ServeOptions.DrainTimeout"/>) and exits 0.
/// </summary>
public static class ServeVerb
{
    public static EngineResult Run(ServeRequest request, VerbContext context)
    {
        var options = Resolve(request, context);
        var host = ServeHost.StartAsync(options, context.Time, context.Log).GetAwaiter().GetResult();
        try
        {
            var finished = Task.WhenAny(host.WaitForShutdownAsync(), host.Failed).GetAwaiter().GetResult();
            if (host.Failed.IsFaulted)
            {
                host.StopAsync().GetAwaiter().GetResult();
                host.Failed.GetAwaiter().GetResult();
            }
            _ = finished;
        }
        finally
        {
            host.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        context.Log("drained and stopped");
        return new EngineResult
        {
            Ok = true,
            Verb = EngineVerbs.Serve,
            DurationSeconds = context.ElapsedSeconds,
            Metrics = new Dictionary<string, double>
            {
                ["promptTokens"] = host.Metrics.PromptTokens,
                ["generationTokens"] = host.Metrics.GenerationTokens,
            },
        };
    }

    public static ServeOptions Resolve(ServeRequest request, VerbContext context)
    {
        var device = TorchRuntime.ResolveDevice(request.Device);
        var shardDevices = PipelinePlacement.ResolveDevices(request, device, device.type == TorchSharp.DeviceType.CUDA ? TorchSharp.torch.cuda.device_count() : 0);
        using var http = ModelSource.CreateHttpClient();
        // A local .gguf file goes to llama.cpp as it is (LoadedModel.GgufPath); anything else resolves to a folder.
        var ggufFile = File.Exists(request.Model) && request.Model.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase);
        var directory = ggufFile ? request.Model : new ModelSource(http, context.Emit, context.Time).Resolve(request.Model, request.Revision, weights: true);
        string? apiKey = null;
        if (request.ApiKeyFile is { } keyFile)
        {
            if (!File.Exists(keyFile))
            {
                throw new ProtocolArgumentException("--api-key-file", $"{keyFile} does not exist", "a file holding the API key");
            }
            apiKey = File.ReadAllText(keyFile).Trim();
            if (apiKey.Length == 0)
            {
                throw new ProtocolArgumentException("--api-key-file", $"{keyFile} is empty", "a file holding the API key");
            }
        }
        var gguf = ggufFile || LoadedModel.GgufPath(directory) is not null;
        if (gguf && shardDevices.Count > 0)
        {
            throw new ProtocolArgumentException(PipelineSplit.ShardsFlag, "a GGUF model runs on llama.cpp's CPU backend, which this engine does not split across devices",
                "1 for a GGUF model (serve its safetensors or lowbit artifact to split it)");
        }
        var servedName = request.ServedName ?? (ggufFile ? Path.GetFileNameWithoutExtension(request.Model) : Path.GetFileName(request.Model.TrimEnd('/')));
        return new ServeOptions
        {
            ModelDirectory = directory,
            ServedName = servedName,
            Port = request.Port,
            Host = Environment.GetEnvironmentVariable(EngineEnv.PodIp) is { Length: > 0 } podIp ? podIp : "0.0.0.0",
            MaxContext = request.MaxContext,
            MaxConcurrency = request.MaxConcurrency,
            PrefillChunk = request.MaxNumBatchedTokens ?? PrefillBudgets.For(device, gguf),
            Device = device,
            ShardDevices = shardDevices,
            ApiKey = apiKey,
            Adapters = ParseAdapters(request.Adapters),
        };
    }

    /// <summary><c>name=path</c> or <c>path</c> (the folder's name is the adapter's name).</summary>
    public static IReadOnlyDictionary<string, string> ParseAdapters(IReadOnlyList<string> values)
    {
        var adapters = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var value in values)
        {
            var eq = value.IndexOf('=', StringComparison.Ordinal);
            var (name, path) = eq > 0 ? (value[..eq], value[(eq + 1)..]) : (Path.GetFileName(value.TrimEnd('/')), value);
            if (!Directory.Exists(path))
            {
                throw new ProtocolArgumentException("--adapters", $"{path} is not a folder", "name=path or path of PEFT adapter folders, comma-separated");
            }
            if (!adapters.TryAdd(name, path))
            {
                throw new ProtocolArgumentException("--adapters", string.Create(CultureInfo.InvariantCulture, $"adapter name '{name}' given twice"), "distinct names");
            }
        }
        return adapters;
    }
}
