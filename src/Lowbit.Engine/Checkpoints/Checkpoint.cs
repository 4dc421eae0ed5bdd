using System.Text.Json;
using Lowbit.Engine.Formats;
using TorchSharp;

namespace Lowbit.Engine.Checkpoints;

/// <summary>
/// A Hugging Face checkpoint folder: <c>config.json</c> plus <c>model.safetensors</c> or shards listed in
/// <c>model.safetensors.index.json</c>. Shards are memory-mapped on first use; tensors are read one at a time, so a
/// caller iterating <see cref="LayerTensors"/> holds one decoder layer in memory, never the whole model.
/// </summary>
public sealed class Checkpoint : IDisposable
{
    public const string IndexFile = "model.safetensors.index.json";
    public const string SingleFile = "model.safetensors";

    private readonly Dictionary<string, string> _fileOf;
    private readonly Dictionary<string, SafetensorsFile> _open = new(StringComparer.Ordinal);

    private Checkpoint(string directory, LlamaConfig config, Dictionary<string, string> fileOf)
    {
        Directory = directory;
        Config = config;
        _fileOf = fileOf;
    }

    public string Directory { get; }

    public LlamaConfig Config { get; }

    /// <summary>Every tensor name in the checkpoint.</summary>
    public IReadOnlyCollection<string> TensorNames => _fileOf.Keys;

    /// <summary>The safetensors files of the checkpoint.</summary>
    public IEnumerable<string> Files => _fileOf.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);

    public static Checkpoint Open(string directory)
    {
        var configPath = Path.Combine(directory, "config.json");
        if (!File.Exists(configPath))
        {
            throw new EngineInputException($"--model: {directory} has no config.json");
        }
        var config = LlamaConfig.Load(configPath);
        var fileOf = new Dictionary<string, string>(StringComparer.Ordinal);
        var index = Path.Combine(directory, IndexFile);
        if (File.Exists(index))
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new EngineInputException($"{index}: missing weight_map");
            }
            foreach (var entry in map.EnumerateObject())
            {
                var file = entry.Value.GetString() ?? "";
                if (file.Contains('/', StringComparison.Ordinal) || file.Contains("..", StringComparison.Ordinal))
                {
                    throw new EngineInputException($"{index}: shard name '{file}' must be a file in the same folder");
                }
                fileOf[entry.Name] = file;
            }
        }
        else if (File.Exists(Path.Combine(directory, SingleFile)))
        {
            using var file = SafetensorsFile.Open(Path.Combine(directory, SingleFile));
            foreach (var name in file.Tensors.Keys)
            {
                fileOf[name] = SingleFile;
            }
        }
        else
        {
            throw new EngineInputException($"--model: {directory} has neither {SingleFile} nor {IndexFile}");
        }
        var checkpoint = new Checkpoint(directory, config, fileOf);
        foreach (var file in checkpoint.Files)
        {
            if (!File.Exists(Path.Combine(directory, file)))
            {
                throw new EngineInputException($"--model: shard {file} listed in {IndexFile} is missing");
            }
        }
        return checkpoint;
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    public SafetensorsTensorInfo Info(string name) => FileOf(name).Get(name);

    /// <summary>Loads one tensor (converted to <paramref name="dtype"/>, on <paramref name="device"/>).</summary>
    public torch.Tensor Load(string name, torch.ScalarType? dtype = null, torch.Device? device = null) =>
        FileOf(name).Load(name, dtype, device);

    /// <summary>The tensors of decoder layer <paramref name="layer"/>, keyed by their name inside the layer (<c>self_attn.q_proj.weight</c>).</summary>
    public IReadOnlyDictionary<string, torch.Tensor> LayerTensors(int layer, torch.ScalarType? dtype = null, torch.Device? device = null)
    {
        var prefix = $"model.layers.{layer}.";
        return _fileOf.Keys
            .Where(n => n.StartsWith(prefix, StringComparison.Ordinal) && !n.EndsWith("rotary_emb.inv_freq", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal)
            .ToDictionary(n => n[prefix.Length..], n => Load(n, dtype, device), StringComparer.Ordinal);
    }

    /// <summary>Total bytes of tensor data.</summary>
    public long DataBytes => _fileOf.Keys.Sum(n => Info(n).ByteLength);

    private SafetensorsFile FileOf(string name)
    {
        if (!_fileOf.TryGetValue(name, out var file))
        {
            throw new EngineInputException($"--model: checkpoint {Directory} has no tensor '{name}'");
        }
        lock (_open)
        {
            if (!_open.TryGetValue(file, out var opened))
            {
                opened = SafetensorsFile.Open(Path.Combine(Directory, file));
                _open[file] = opened;
            }
            return opened;
        }
    }

    public void Dispose()
    {
        foreach (var file in _open.Values)
        {
            file.Dispose();
        }
        _open.Clear();
    }
}
