using Lowbit.Engine.Decoding;
using Lowbit.Engine.Network;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Serving;

/// <summary>One adapter's low-rank factors per module (<c>model.layers.3.self_attn.q_proj</c> → A <c>[r, in]</c>, B <c>[out, r]</c>) and its scaling.</summary>
public sealed record AdapterWeights(double Scaling, IReadOnlyDictionary<string, (Tensor A, Tensor B)> Modules);

/// <summary>How a <see cref="LoraSet"/> applies its adapters.</summary>
public enum LoraLayout
{
    /// <summary>Stacked per fused projection of the <see cref="FastDecoder"/> (<see cref="IFusedAdapters"/>): the server's path.</summary>
    FusedStacks,

    /// <summary>Every projection of the model wrapped in a <see cref="MultiLoraLinear"/>: the reference <see cref="DecodeBatch"/> path.</summary>
    ModuleWrappers,
}

/// <summary>
/// The LoRA adapters of the server, several in one batch. With <see cref="LoraLayout.FusedStacks"/> the factors of
/// all loaded adapters are stacked per fused projection (<see cref="FusedAdapter"/>: A of every adapter one after
/// another, B block-diagonal per module, ranks padded) and the <see cref="FastDecoder"/> adds each row's delta
/// through a one-hot adapter mask; with <see cref="LoraLayout.ModuleWrappers"/> every projection is wrapped in a
/// <see cref="MultiLoraLinear"/> that gathers each row's factors (row 0 "no adapter"). Loading and unloading run on
/// the scheduler's thread between steps.
/// </summary>
public sealed class LoraSet : IDisposable, IFusedAdapters
{
    private readonly Dictionary<string, MultiLoraLinear> _layers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (long In, long Out)> _shapes = new(StringComparer.Ordinal);
    private readonly Dictionary<(int Layer, FusedGroup Group), FusedAdapter> _fused = [];
    private readonly LoraLayout _layout;
    private readonly int _layerCount;
    private readonly ScalarType _dtype;
    private readonly Device _device;
    private readonly Func<int, Device>? _layerDevice;
    private readonly Lock _gate = new();
    private readonly List<(string Name, string Path, AdapterWeights Weights)> _adapters = [];
    private Tensor? _rows;

    /// <param name="model">The served model.</param>
    /// <param name="device">Where adapters are read (and, unsplit, where their stacks live).</param>
    /// <param name="layout">How the adapters apply.</param>
    /// <param name="layerDevice">
    /// A pipeline split's device of each decoder layer (<c>serve --shards</c>): every layer's fused stacks live on its
    /// shard's device; null: all on <paramref name="device"/>.
    /// </param>
    public LoraSet(LlamaForCausalLM model, Device device, LoraLayout layout = LoraLayout.FusedStacks, Func<int, Device>? layerDevice = null)
    {
        _device = device;
        _layerDevice = layerDevice;
        _layout = layout;
        _layerCount = model.Model.Layers.Count;
        _dtype = model.Dtype;
        model.ReplaceLinears((name, layer) =>
        {
            _shapes[name] = (layer.InFeatures, layer.OutFeatures);
            if (layout == LoraLayout.FusedStacks)
            {
                return null;
            }
            var wrapped = new MultiLoraLinear(layer, this, model.Dtype);
            _layers[name] = wrapped;
            return wrapped;
        });
    }

    /// <inheritdoc/>
    public int Version { get; private set; }

    /// <inheritdoc/>
    public int Count { get; private set; }

    /// <inheritdoc/>
    public FusedAdapter? Fused(int layer, FusedGroup group) => _fused.GetValueOrDefault((layer, group));

    /// <summary>Reads a PEFT adapter folder onto a device (the engine's one PEFT reader, <see cref="Lora.PeftAdapter.Read"/>).</summary>
    public static Func<string, Device, AdapterWeights> Reader { get; set; } = ReadPeft;

    private static AdapterWeights ReadPeft(string directory, Device device)
    {
        // The tensors move into the AdapterWeights, so the PeftAdapter that read them is not disposed here.
        var adapter = Lora.PeftAdapter.Read(directory, device);
        return new AdapterWeights(adapter.Scaling, adapter.Modules.ToDictionary(kv => kv.Key, kv => (kv.Value.A, kv.Value.B), StringComparer.Ordinal));
    }

    /// <summary>Runs an action on the scheduler's thread (set by the scheduler's owner).</summary>
    public Func<Action, Task> RunOnLoop { get; set; } = action =>
    {
        action();
        return Task.CompletedTask;
    };

    /// <summary>(name, path) of every loaded adapter.</summary>
    public IReadOnlyList<(string Name, string Path)> Loaded
    {
        get
        {
            lock (_gate)
            {
                return _adapters.Select(a => (a.Name, a.Path)).ToArray();
            }
        }
    }

    /// <summary>True when some batch row uses an adapter in the current step.</summary>
    internal bool Active { get; private set; }

    internal Tensor? Rows => _rows;

    /// <summary>The stack row of an adapter (1-based), or null.</summary>
    public int? RowOf(string name)
    {
        lock (_gate)
        {
            var index = _adapters.FindIndex(a => a.Name == name);
            return index < 0 ? null : index + 1;
        }
    }

    public void Load(string name, string path)
    {
        if (!Directory.Exists(path))
        {
            throw new OpenAiError(400, $"lora_path: {path} is not a folder", "lora_path", "invalid_value");
        }
        AdapterWeights weights;
        try
        {
            weights = Reader(path, _device);
        }
        catch (Exception ex) when (ex is EngineInputException or IOException or InvalidDataException or ArgumentException or InvalidOperationException)
        {
            throw new OpenAiError(400, $"lora_path: {path}: {ex.Message}", "lora_path", "invalid_value");
        }
        foreach (var (module, (a, b)) in weights.Modules)
        {
            if (!_shapes.TryGetValue(module, out var layer))
            {
                throw new OpenAiError(400, $"lora_path: {path}: module {module} is not a projection of the served model", "lora_path", "invalid_value");
            }
            if (a.shape[1] != layer.In || b.shape[0] != layer.Out || a.shape[0] != b.shape[1])
            {
                throw new OpenAiError(400, $"lora_path: {path}: {module} has A {string.Join('x', a.shape)} and B {string.Join('x', b.shape)}; the model needs [r, {layer.In}] and [{layer.Out}, r]", "lora_path", "invalid_value");
            }
        }
        RunOnLoop(() =>
        {
            lock (_gate)
            {
                var index = _adapters.FindIndex(a => a.Name == name);
                if (index >= 0)
                {
                    DisposeWeights(_adapters[index].Weights);
                    _adapters[index] = (name, path, weights);
                }
                else
                {
                    _adapters.Add((name, path, weights));
                }
                Rebuild();
            }
        }).GetAwaiter().GetResult();
    }

    public bool Unload(string name)
    {
        var found = false;
        RunOnLoop(() =>
        {
            lock (_gate)
            {
                var index = _adapters.FindIndex(a => a.Name == name);
                if (index < 0)
                {
                    return;
                }
                found = true;
                DisposeWeights(_adapters[index].Weights);
                _adapters.RemoveAt(index);
                Rebuild();
            }
        }).GetAwaiter().GetResult();
        return found;
    }

    /// <summary>Sets the adapter row of each batch row for the next forward pass (scheduler thread).</summary>
    public void SelectRows(int[] rows)
    {
        _rows?.Dispose();
        _rows = null;
        Active = rows.Any(r => r > 0);
        if (Active)
        {
            _rows = tensor(rows.Select(r => (long)r).ToArray(), device: _device);
        }
    }

    private void Rebuild()
    {
        Count = _adapters.Count;
        Version++;
        RebuildFused();
        foreach (var (module, layer) in _layers)
        {
            var rank = _adapters.Count == 0 ? 0 : _adapters.Max(a => a.Weights.Modules.TryGetValue(module, out var w) ? w.A.shape[0] : 0);
            if (rank == 0)
            {
                layer.SetStacks(null, null);
                continue;
            }
            using var scope = NewDisposeScope();
            var dtype = layer.ComputeDtype;
            var a = zeros([_adapters.Count + 1, rank, layer.InFeatures], dtype, _device);
            var b = zeros([_adapters.Count + 1, layer.OutFeatures, rank], dtype, _device);
            for (var i = 0; i < _adapters.Count; i++)
            {
                if (_adapters[i].Weights.Modules.TryGetValue(module, out var w))
                {
                    var r = w.A.shape[0];
                    a[i + 1].narrow(0, 0, r).copy_(w.A.to(dtype));
                    b[i + 1].narrow(1, 0, r).copy_((w.B * Scalars.Of(_adapters[i].Weights.Scaling)).to(dtype));
                }
            }
            layer.SetStacks(a.DetachFromDisposeScope(), b.DetachFromDisposeScope());
        }
    }

    /// <summary>The <see cref="FusedAdapter"/> stacks of every (layer, fused group) some adapter touches.</summary>
    private void RebuildFused()
    {
        foreach (var stack in _fused.Values)
        {
            stack.A.Dispose();
            stack.B.Dispose();
        }
        _fused.Clear();
        if (_layout != LoraLayout.FusedStacks || _adapters.Count == 0)
        {
            return;
        }
        var n = _adapters.Count;
        for (var layer = 0; layer < _layerCount; layer++)
        {
            foreach (var group in Enum.GetValues<FusedGroup>())
            {
                var modules = FastDecoder.ModulesOf(group).Select(m => $"model.layers.{layer}.{m}").ToArray();
                var ranks = modules.Select(m => _adapters.Max(a => a.Weights.Modules.TryGetValue(m, out var w) ? (int)w.A.shape[0] : 0)).ToArray();
                var rank = ranks.Sum();
                if (rank == 0)
                {
                    continue;
                }
                using var scope = NewDisposeScope();
                var inFeatures = _shapes[modules[0]].In;
                var outs = modules.Select(m => _shapes[m].Out).ToArray();
                var device = _layerDevice?.Invoke(layer) ?? _device;
                var a = zeros([n, rank, inFeatures], _dtype, device);
                var b = zeros([n, outs.Sum(), rank], _dtype, device);
                for (var i = 0; i < n; i++)
                {
                    var (rankAt, outAt) = (0L, 0L);
                    for (var m = 0; m < modules.Length; m++)
                    {
                        if (_adapters[i].Weights.Modules.TryGetValue(modules[m], out var w))
                        {
                            var r = w.A.shape[0];
                            a[i].narrow(0, rankAt, r).copy_(w.A.to(_dtype));
                            b[i].narrow(0, outAt, outs[m]).narrow(1, rankAt, r).copy_((w.B * Scalars.Of(_adapters[i].Weights.Scaling)).to(_dtype));
                        }
                        rankAt += ranks[m];
                        outAt += outs[m];
                    }
                }
                _fused[(layer, group)] = new FusedAdapter
                {
                    A = a.reshape(n * rank, inFeatures).contiguous().DetachFromDisposeScope(),
                    B = b.permute(1, 0, 2).reshape(outs.Sum(), n * rank).contiguous().DetachFromDisposeScope(),
                    Rank = rank,
                };
            }
        }
    }

    private static void DisposeWeights(AdapterWeights weights)
    {
        foreach (var (a, b) in weights.Modules.Values)
        {
            a.Dispose();
            b.Dispose();
        }
    }

    public void Dispose()
    {
        _rows?.Dispose();
        foreach (var stack in _fused.Values)
        {
            stack.A.Dispose();
            stack.B.Dispose();
        }
        foreach (var adapter in _adapters)
        {
            DisposeWeights(adapter.Weights);
        }
    }
}

/// <summary>A projection plus the stacked LoRA factors of every loaded adapter, applied per batch row.</summary>
public sealed class MultiLoraLinear : LinearLayer
{
    private readonly LinearLayer _base;
    private readonly LoraSet _set;
    private Tensor? _a;
    private Tensor? _b;

    public MultiLoraLinear(LinearLayer inner, LoraSet set, ScalarType dtype)
        : base("MultiLoraLinear", inner.InFeatures, inner.OutFeatures)
    {
        _base = inner;
        _set = set;
        ComputeDtype = dtype;
        register_module("base_layer", inner);
    }

    public ScalarType ComputeDtype { get; }

    internal void SetStacks(Tensor? a, Tensor? b)
    {
        _a?.Dispose();
        _b?.Dispose();
        _a = a;
        _b = b;
    }

    public override Tensor forward(Tensor input)
    {
        var output = _base.forward(input);
        if (!_set.Active || _a is null || _set.Rows is not { } rows)
        {
            return output;
        }
        using var scope = NewDisposeScope();
        // input [rows, T, in]; per row: x·A[row]ᵀ·B[row]ᵀ (B already carries the scaling).
        var a = _a.index_select(0, rows);
        var b = _b!.index_select(0, rows);
        var delta = input.to(a.dtype).bmm(a.transpose(1, 2)).bmm(b.transpose(1, 2)).to(output.dtype);
        return output.add(delta, Scalars.One).MoveToOuterDisposeScope();
    }

    public override Tensor DenseWeight(ScalarType dtype) => _base.DenseWeight(dtype);

    public override Tensor? DenseBias(ScalarType dtype) => _base.DenseBias(dtype);

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _a?.Dispose();
            _b?.Dispose();
        }
        base.Dispose(disposing);
    }
}
