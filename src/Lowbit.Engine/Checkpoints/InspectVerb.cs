using System.Globalization;
using System.Text.Json;
using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;
using Lowbit.Engine.Protocol;
using Lowbit.Engine.Sources;

namespace Lowbit.Engine.Checkpoints;

/// <summary><c>inspect</c>: architecture, parameter count, dtype, tensor count and size, from config and headers only (no weights read).</summary>
public static class InspectVerb
{
    public static EngineResult Run(InspectRequest request, VerbContext context)
    {
        using var http = ModelSource.CreateHttpClient();
        var source = new ModelSource(http, context.Emit, context.Time);
        var directory = source.Resolve(request.Model, request.Revision, weights: false);
        var config = LlamaConfig.Load(Path.Combine(directory, "config.json"));
        long parameters, bytes;
        int tensors;
        var dtypes = new SortedSet<string>(StringComparer.Ordinal);
        var local = File.Exists(Path.Combine(directory, Checkpoint.SingleFile)) || ModelSource.KindOf(request.Model) == SourceKind.LocalFolder;
        if (local)
        {
            using var checkpoint = Checkpoint.Open(directory);
            var infos = checkpoint.TensorNames.Select(checkpoint.Info).ToList();
            parameters = infos.Where(i => !i.Name.EndsWith("inv_freq", StringComparison.Ordinal)).Sum(i => i.ElementCount);
            bytes = infos.Sum(i => i.ByteLength);
            tensors = infos.Count;
            dtypes.UnionWith(infos.Select(i => SafetensorsDtypes.Name(i.Dtype)));
        }
        else
        {
            // Remote, not downloaded: the index gives the tensor count and size; the config gives the parameter count.
            var index = Path.Combine(directory, Checkpoint.IndexFile);
            parameters = config.ParameterCount;
            if (File.Exists(index))
            {
                using var doc = JsonDocument.Parse(File.ReadAllText(index));
                tensors = doc.RootElement.GetProperty("weight_map").EnumerateObject().Count();
                bytes = doc.RootElement.TryGetProperty("metadata", out var m) && m.TryGetProperty("total_size", out var t) ? t.GetInt64() : 0;
            }
            else
            {
                tensors = config.NumHiddenLayers * (9 + (config.QkvBias ? 3 : 0)) + 2 + (config.TieWordEmbeddings ? 0 : 1);
                bytes = 0;
            }
            dtypes.Add(config.TorchDtype ?? "unknown");
        }
        var dtype = string.Join(",", dtypes);
        context.Stderr.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"{config.Architecture}: {parameters:N0} parameters, {dtype}, {tensors} tensors, {bytes / 1e6:F1} MB, {config.NumHiddenLayers} layers, hidden {config.HiddenSize}, heads {config.NumAttentionHeads}/{config.NumKeyValueHeads}, vocab {config.VocabSize}"));
        return new EngineResult
        {
            Ok = true,
            Verb = EngineVerbs.Inspect,
            DurationSeconds = context.ElapsedSeconds,
            Info = new Dictionary<string, string>
            {
                ["architecture"] = config.Architecture,
                ["modelType"] = config.ModelType,
                ["dtype"] = dtype,
                ["source"] = ModelSource.Describe(request.Model, request.Revision),
            },
            Metrics = new Dictionary<string, double>
            {
                ["parameters"] = parameters,
                ["tensors"] = tensors,
                ["bytes"] = bytes,
                ["layers"] = config.NumHiddenLayers,
                ["hiddenSize"] = config.HiddenSize,
                ["intermediateSize"] = config.IntermediateSize,
                ["attentionHeads"] = config.NumAttentionHeads,
                ["keyValueHeads"] = config.NumKeyValueHeads,
                ["vocabSize"] = config.VocabSize,
                ["maxPositionEmbeddings"] = config.MaxPositionEmbeddings,
            },
        };
    }
}
