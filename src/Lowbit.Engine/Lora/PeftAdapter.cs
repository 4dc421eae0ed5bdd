using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Lowbit.Engine.Formats;
using TorchSharp;
using static TorchSharp.torch;

namespace Lowbit.Engine.Lora;

/// <summary>The A and B matrices of one adapted projection: <c>A</c> is <c>[r, in]</c>, <c>B</c> is <c>[out, r]</c>.</summary>
public sealed record LoraWeights(Tensor A, Tensor B) : IDisposable
{
    public long Rank => A.shape[0];

    public long InFeatures => A.shape[1];

    public long OutFeatures => B.shape[0];

    /// <summary>The adapter's contribution for input <paramref name="x"/> (<c>[..., in]</c>): <c>x·Aᵀ·Bᵀ·scaling</c>, in x's dtype.</summary>
    public Tensor Delta(Tensor x, double scaling) => LoraMath.Delta(x, A, B, scaling);

    /// <summary>The dense weight update <c>scaling · B·A</c> (<c>[out, in]</c>) in <paramref name="dtype"/>.</summary>
    public Tensor MergedDelta(double scaling, ScalarType dtype) => LoraMath.MergedDelta(A, B, scaling, dtype);

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
    }
}

/// <summary>The LoRA math shared by training (<see cref="LoraLinear"/>) and multi-adapter serving.</summary>
public static class LoraMath
{
    /// <summary><c>(x·Aᵀ)·Bᵀ·scaling</c> for <c>x</c> <c>[..., in]</c>, <c>A</c> <c>[r, in]</c>, <c>B</c> <c>[out, r]</c>; computed in x's dtype.</summary>
    public static Tensor Delta(Tensor x, Tensor a, Tensor b, double scaling)
    {
        using var scope = NewDisposeScope();
        var down = nn.functional.linear(x, a.dtype == x.dtype ? a : a.to(x.dtype));
        var up = nn.functional.linear(down, b.dtype == x.dtype ? b : b.to(x.dtype));
        using var factor = scaling.ToScalar();   // held: an implicit Scalar temporary may be finalized mid-call
        return (scaling == 1.0 ? up : up.mul(factor)).MoveToOuterDisposeScope();
    }

    /// <summary><c>scaling · B·A</c> as a dense <c>[out, in]</c> tensor (computed in float32, returned in <paramref name="dtype"/>).</summary>
    public static Tensor MergedDelta(Tensor a, Tensor b, double scaling, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var delta = b.to(ScalarType.Float32).matmul(a.to(ScalarType.Float32)).mul(Scalars.Of(scaling)).to(dtype);
        return delta.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// A Hugging Face PEFT LoRA adapter on disk: <c>adapter_config.json</c> (PEFT's <c>LoraConfig</c>, written as PEFT
/// writes it: <c>json.dumps(indent=2, sort_keys=True)</c>) and <c>adapter_model.safetensors</c> with keys
/// <c>base_model.model.&lt;module&gt;.lora_A.weight</c> <c>[r, in]</c> and <c>.lora_B.weight</c> <c>[out, r]</c>
/// (the adapter name <c>default</c> stripped, as PEFT saves), metadata <c>{"format": "pt"}</c>.
/// Modules are keyed here by their path in the base model (<c>model.layers.0.self_attn.q_proj</c>).
/// </summary>
public sealed class PeftAdapter : IDisposable
{
    public const string ConfigFile = "adapter_config.json";
    public const string WeightsFile = "adapter_model.safetensors";
    public const string KeyPrefix = "base_model.model.";

    public PeftAdapter(LoraSettings settings, string baseModel, IReadOnlyDictionary<string, LoraWeights> modules)
    {
        Settings = settings;
        BaseModel = baseModel;
        Modules = modules;
    }

    public LoraSettings Settings { get; }

    /// <summary><c>base_model_name_or_path</c>.</summary>
    public string BaseModel { get; }

    /// <summary>Adapted projections by module path (<c>model.layers.0.self_attn.q_proj</c>).</summary>
    public IReadOnlyDictionary<string, LoraWeights> Modules { get; }

    public double Scaling => Settings.Scaling;

    public static string KeyA(string module) => $"{KeyPrefix}{module}.lora_A.weight";

    public static string KeyB(string module) => $"{KeyPrefix}{module}.lora_B.weight";

    public static bool IsAdapter(string directory) =>
        File.Exists(Path.Combine(directory, ConfigFile)) && File.Exists(Path.Combine(directory, WeightsFile));

    /// <summary>Writes both files (each through a temporary file and a rename); returns the bytes written.</summary>
    public long Write(string directory, ScalarType storeAs = ScalarType.Float32)
    {
        Directory.CreateDirectory(directory);
        var configPath = Path.Combine(directory, ConfigFile);
        File.WriteAllText(configPath + ".tmp", ConfigJson(Settings, BaseModel));
        File.Move(configPath + ".tmp", configPath, overwrite: true);
        using var scope = NewDisposeScope();
        var tensors = new List<KeyValuePair<string, Tensor>>();
        foreach (var (module, w) in Modules)
        {
            tensors.Add(new(KeyA(module), w.A.detach().to(storeAs).cpu()));
            tensors.Add(new(KeyB(module), w.B.detach().to(storeAs).cpu()));
        }
        var weightsPath = Path.Combine(directory, WeightsFile);
        SafetensorsWriter.Write(weightsPath, tensors, new Dictionary<string, string> { ["format"] = "pt" });
        return new FileInfo(configPath).Length + new FileInfo(weightsPath).Length;
    }

    /// <summary>Reads an adapter folder; tensors land on <paramref name="device"/> as float32.</summary>
    public static PeftAdapter Read(string directory, Device? device = null)
    {
        var configPath = Path.Combine(directory, ConfigFile);
        var weightsPath = Path.Combine(directory, WeightsFile);
        if (!File.Exists(configPath))
        {
            throw new EngineInputException($"--adapter: {directory} has no {ConfigFile} (expected a PEFT LoRA adapter folder)");
        }
        if (!File.Exists(weightsPath))
        {
            throw new EngineInputException($"--adapter: {directory} has no {WeightsFile} (the legacy adapter_model.bin is not supported; re-save with safe_serialization=True)");
        }
        var (settings, baseModel, targetRegex) = ParseConfig(File.ReadAllText(configPath));
        using var file = SafetensorsFile.Open(weightsPath);
        var a = new Dictionary<string, string>(StringComparer.Ordinal);
        var b = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var key in file.Tensors.Keys)
        {
            var module = ModuleOf(key, out var which);
            if (module is null)
            {
                throw new EngineInputException($"--adapter: {WeightsFile} has tensor '{key}', which is not a LoRA A/B weight (modules_to_save and bias are not supported)");
            }
            (which == 'A' ? a : b)[module] = key;
        }
        var modules = new Dictionary<string, LoraWeights>(StringComparer.Ordinal);
        foreach (var (module, keyA) in a.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            if (!b.TryGetValue(module, out var keyB))
            {
                throw new EngineInputException($"--adapter: {module} has lora_A but no lora_B");
            }
            var ta = file.Load(keyA, ScalarType.Float32, device);
            var tb = file.Load(keyB, ScalarType.Float32, device);
            if (ta.dim() != 2 || tb.dim() != 2 || tb.shape[1] != ta.shape[0] || ta.shape[0] != settings.R)
            {
                throw new EngineInputException($"--adapter: {module}: lora_A [{string.Join(",", ta.shape)}] and lora_B [{string.Join(",", tb.shape)}] do not form a rank-{settings.R} pair");
            }
            modules[module] = new LoraWeights(ta.DetachFromDisposeScope(), tb.DetachFromDisposeScope());
        }
        foreach (var module in b.Keys.Where(m => !a.ContainsKey(m)))
        {
            throw new EngineInputException($"--adapter: {module} has lora_B but no lora_A");
        }
        if (targetRegex is not null)
        {
            settings = settings with { TargetModules = modules.Keys.Select(m => m[(m.LastIndexOf('.') + 1)..]).Distinct().Order(StringComparer.Ordinal).ToList() };
        }
        return new PeftAdapter(settings, baseModel, modules);
    }

    /// <summary>The module path of a PEFT tensor key and whether it is A or B; null for other tensors.</summary>
    public static string? ModuleOf(string key, out char which)
    {
        which = ' ';
        var path = key.StartsWith(KeyPrefix, StringComparison.Ordinal) ? key[KeyPrefix.Length..] : key;
        foreach (var (suffix, w) in new[] { (".lora_A.weight", 'A'), (".lora_B.weight", 'B'), (".lora_A.default.weight", 'A'), (".lora_B.default.weight", 'B') })
        {
            if (path.EndsWith(suffix, StringComparison.Ordinal))
            {
                which = w;
                return path[..^suffix.Length];
            }
        }
        return null;
    }

    /// <summary>
    /// adapter_config.json exactly as PEFT's <c>save_pretrained</c> writes a <c>LoraConfig</c> of these settings:
    /// sorted keys, two-space indent, Python's separators and float spelling, no trailing newline.
    /// </summary>
    public static string ConfigJson(LoraSettings settings, string baseModel)
    {
        var fields = new SortedDictionary<string, string>(StringComparer.Ordinal)
        {
            ["alpha_pattern"] = "{}",
            ["auto_mapping"] = "null",
            ["base_model_name_or_path"] = PyString(baseModel),
            ["bias"] = PyString("none"),
            ["fan_in_fan_out"] = "false",
            ["inference_mode"] = "true",
            ["init_lora_weights"] = "true",
            ["layers_pattern"] = "null",
            ["layers_to_transform"] = "null",
            ["loftq_config"] = "{}",
            ["lora_alpha"] = PyNumber(settings.Alpha),
            ["lora_dropout"] = PyFloat(settings.Dropout),
            ["megatron_config"] = "null",
            ["megatron_core"] = PyString("megatron.core"),
            ["modules_to_save"] = "null",
            ["peft_type"] = PyString("LORA"),
            ["r"] = settings.R.ToString(CultureInfo.InvariantCulture),
            ["rank_pattern"] = "{}",
            ["revision"] = "null",
            ["target_modules"] = PyList(settings.TargetModules.Order(StringComparer.Ordinal)),
            ["task_type"] = PyString("CAUSAL_LM"),
            ["use_dora"] = "false",
            ["use_rslora"] = settings.UseRslora ? "true" : "false",
        };
        var text = new StringBuilder("{\n");
        var first = true;
        foreach (var (key, value) in fields)
        {
            if (!first)
            {
                text.Append(",\n");
            }
            first = false;
            text.Append("  ").Append(PyString(key)).Append(": ").Append(value);
        }
        return text.Append("\n}").ToString();
    }

    /// <summary>Parses a PEFT LoRA config; fails with a clear message on features the engine does not implement.</summary>
    public static (LoraSettings Settings, string BaseModel, Regex? TargetRegex) ParseConfig(string json)
    {
        JsonObject root;
        try
        {
            root = JsonNode.Parse(json)?.AsObject() ?? throw new EngineInputException($"--adapter: {ConfigFile} is not a JSON object");
        }
        catch (System.Text.Json.JsonException ex)
        {
            throw new EngineInputException($"--adapter: {ConfigFile} is not valid JSON: {ex.Message}");
        }
        string? Str(string key) => root[key] is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
        bool Bool(string key) => root[key] is JsonValue v && v.TryGetValue<bool>(out var x) && x;
        if (Str("peft_type") is { } type && type != "LORA")
        {
            throw new EngineInputException($"--adapter: peft_type is '{type}'; only LORA adapters are supported");
        }
        if (Bool("fan_in_fan_out"))
        {
            throw new EngineInputException("--adapter: fan_in_fan_out=true (Conv1D models) is not supported for Llama-family bases");
        }
        if (Bool("use_dora"))
        {
            throw new EngineInputException("--adapter: use_dora=true (DoRA) is not supported; train a plain LoRA adapter");
        }
        if (Str("bias") is { } bias && bias != "none")
        {
            throw new EngineInputException($"--adapter: bias='{bias}' is not supported; only bias='none'");
        }
        foreach (var pattern in new[] { "rank_pattern", "alpha_pattern" })
        {
            if (root[pattern] is JsonObject { Count: > 0 })
            {
                throw new EngineInputException($"--adapter: {pattern} is not empty; per-module ranks are not supported");
            }
        }
        var r = root["r"]?.GetValue<int>() ?? 8;
        var alpha = root["lora_alpha"]?.GetValue<double>() ?? 8;
        var dropout = root["lora_dropout"]?.GetValue<double>() ?? 0;
        Regex? regex = null;
        IReadOnlyList<string> targets;
        switch (root["target_modules"])
        {
            case JsonArray list:
                targets = list.Select(n => n!.GetValue<string>()).ToList();
                break;
            case JsonValue v when v.TryGetValue<string>(out var s) && s == "all-linear":
                targets = LoraSettings.AllTargets;
                break;
            case JsonValue v when v.TryGetValue<string>(out var s):
                regex = new Regex("^(?:" + s + ")$", RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
                targets = LoraSettings.AllTargets;
                break;
            default:
                targets = ["q_proj", "v_proj"];
                break;
        }
        var settings = new LoraSettings { R = r, Alpha = alpha, Dropout = dropout, TargetModules = targets, UseRslora = Bool("use_rslora") };
        return (settings, Str("base_model_name_or_path") ?? "", regex);
    }

    private static string PyString(string s)
    {
        var text = new StringBuilder("\"");
        foreach (var c in s)
        {
            switch (c)
            {
                case '"': text.Append("\\\""); break;
                case '\\': text.Append("\\\\"); break;
                case '\n': text.Append("\\n"); break;
                case '\r': text.Append("\\r"); break;
                case '\t': text.Append("\\t"); break;
                case < ' ' or > '~': text.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:x4}"); break;
                default: text.Append(c); break;
            }
        }
        return text.Append('"').ToString();
    }

    private static string PyList(IEnumerable<string> items)
    {
        var list = items.ToList();
        return list.Count == 0 ? "[]" : "[\n" + string.Join(",\n", list.Select(i => "    " + PyString(i))) + "\n  ]";
    }

    /// <summary>An integral alpha is written as a Python int (PEFT configs carry <c>lora_alpha: 32</c>), otherwise as a float.</summary>
    private static string PyNumber(double value) =>
        value == Math.Floor(value) && Math.Abs(value) < 1e15 ? ((long)value).ToString(CultureInfo.InvariantCulture) : PyFloat(value);

    /// <summary>Python's <c>repr(float)</c> for ordinary values: shortest round-trip digits, <c>.0</c> when integral.</summary>
    private static string PyFloat(double value)
    {
        var s = value.ToString("R", CultureInfo.InvariantCulture);
        return s.Contains('.', StringComparison.Ordinal) || s.Contains('E', StringComparison.Ordinal) ? s.Replace("E", "e", StringComparison.Ordinal) : s + ".0";
    }

    public void Dispose()
    {
        foreach (var w in Modules.Values)
        {
            w.Dispose();
        }
    }
}
