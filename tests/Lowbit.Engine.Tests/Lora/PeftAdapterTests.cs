using System.Buffers.Binary;
using System.Text;
using Lowbit.Engine.Lora;
using static TorchSharp.torch;

namespace Lowbit.Engine.Tests.Lora;

public sealed class PeftAdapterTests
{
    private const string Module = "model.layers.0.self_attn.q_proj";

    private static PeftAdapter Sample(bool rslora = false)
    {
        var a = arange(Scalars.Of(8), ScalarType.Float32).reshape(2, 4).div(Scalars.Of(8));      // [r=2, in=4]
        var b = arange(Scalars.Of(6), ScalarType.Float32).reshape(3, 2).sub(Scalars.Of(2.5));    // [out=3, r=2]
        var settings = new LoraSettings { R = 2, Alpha = 4, Dropout = 0.05, TargetModules = ["v_proj", "q_proj"], UseRslora = rslora };
        return new PeftAdapter(settings, "tests/fixtures/tiny-llama", new Dictionary<string, LoraWeights> { [Module] = new(a, b) });
    }

    [Fact]
    public void Does_write_adapter_config_json_byte_for_byte_as_peft_save_pretrained()
    {
        using var dir = new TempDir();
        using var adapter = Sample();
        adapter.Write(dir.Path);

        // json.dumps(LoraConfig(...).to_dict(), indent=2, sort_keys=True): what PEFT writes for these settings.
        const string expected = """
            {
              "alpha_pattern": {},
              "auto_mapping": null,
              "base_model_name_or_path": "tests/fixtures/tiny-llama",
              "bias": "none",
              "fan_in_fan_out": false,
              "inference_mode": true,
              "init_lora_weights": true,
              "layers_pattern": null,
              "layers_to_transform": null,
              "loftq_config": {},
              "lora_alpha": 4,
              "lora_dropout": 0.05,
              "megatron_config": null,
              "megatron_core": "megatron.core",
              "modules_to_save": null,
              "peft_type": "LORA",
              "r": 2,
              "rank_pattern": {},
              "revision": null,
              "target_modules": [
                "q_proj",
                "v_proj"
              ],
              "task_type": "CAUSAL_LM",
              "use_dora": false,
              "use_rslora": false
            }
            """;
        Assert.Equal(expected, File.ReadAllText(Path.Combine(dir.Path, PeftAdapter.ConfigFile)));
    }

    [Fact]
    public void Does_write_adapter_model_safetensors_with_peft_keys_shapes_and_layout()
    {
        using var dir = new TempDir();
        using var adapter = Sample();
        adapter.Write(dir.Path);

        // The oracle: PEFT key names (adapter name stripped), A [r, in], B [out, r], F32, {"format":"pt"},
        // safetensors' writer order (dtype size, then name), header space-padded to 8 bytes.
        var header = "{\"__metadata__\":{\"format\":\"pt\"},"
            + "\"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[2,4],\"data_offsets\":[0,32]},"
            + "\"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[3,2],\"data_offsets\":[32,56]}}";
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var padded = (headerBytes.Length + 7) / 8 * 8;
        var expected = new byte[8 + padded + 56];
        BinaryPrimitives.WriteInt64LittleEndian(expected, padded);
        headerBytes.CopyTo(expected, 8);
        expected.AsSpan(8 + headerBytes.Length, padded - headerBytes.Length).Fill((byte)' ');
        float[] a = [0f, 0.125f, 0.25f, 0.375f, 0.5f, 0.625f, 0.75f, 0.875f];
        float[] b = [-2.5f, -1.5f, -0.5f, 0.5f, 1.5f, 2.5f];
        var offset = 8 + padded;
        foreach (var v in a.Concat(b))
        {
            BinaryPrimitives.WriteSingleLittleEndian(expected.AsSpan(offset), v);
            offset += 4;
        }

        Assert.Equal(expected, File.ReadAllBytes(Path.Combine(dir.Path, PeftAdapter.WeightsFile)));
    }

    [Fact]
    public void Does_round_trip_settings_and_weights_when_read_back()
    {
        using var dir = new TempDir();
        using var adapter = Sample(rslora: true);
        adapter.Write(dir.Path);

        using var read = PeftAdapter.Read(dir.Path);

        Assert.Equal(2, read.Settings.R);
        Assert.Equal(4.0, read.Settings.Alpha);
        Assert.Equal(0.05, read.Settings.Dropout);
        Assert.True(read.Settings.UseRslora);
        Assert.Equal(4 / Math.Sqrt(2), read.Scaling, 12);
        Assert.Equal(["q_proj", "v_proj"], read.Settings.TargetModules);
        Assert.Equal("tests/fixtures/tiny-llama", read.BaseModel);
        Assert.Equal([Module], read.Modules.Keys);
        Assert.True(read.Modules[Module].A.allclose(adapter.Modules[Module].A, 0, 0));
        Assert.True(read.Modules[Module].B.allclose(adapter.Modules[Module].B, 0, 0));
    }

    [Fact]
    public void Does_compute_peft_scaling_oracles()
    {
        Assert.Equal(2.0, new LoraSettings { R = 16, Alpha = 32, TargetModules = ["q_proj"] }.Scaling);
        Assert.Equal(8.0, new LoraSettings { R = 16, Alpha = 32, TargetModules = ["q_proj"], UseRslora = true }.Scaling);
    }

    [Theory]
    [InlineData("\"use_dora\": true", "use_dora")]
    [InlineData("\"fan_in_fan_out\": true", "fan_in_fan_out")]
    [InlineData("\"bias\": \"all\"", "bias")]
    [InlineData("\"peft_type\": \"IA3\"", "peft_type")]
    [InlineData("\"rank_pattern\": {\"q_proj\": 4}", "rank_pattern")]
    public void Does_reject_peft_features_the_engine_lacks_naming_the_field(string field, string name)
    {
        var ex = Assert.Throws<EngineInputException>(() => PeftAdapter.ParseConfig("{\"r\": 8, \"lora_alpha\": 16, " + field + "}"));
        Assert.Contains(name, ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_accept_all_linear_and_regex_target_modules()
    {
        var (all, _, _) = PeftAdapter.ParseConfig("""{"r": 8, "lora_alpha": 16, "target_modules": "all-linear"}""");
        var (_, _, regex) = PeftAdapter.ParseConfig("""{"r": 8, "lora_alpha": 16, "target_modules": ".*\\.(q_proj|v_proj)"}""");
        Assert.Equal(7, all.TargetModules.Count);
        Assert.NotNull(regex);
        Assert.Matches(regex, "model.layers.3.self_attn.q_proj");
    }
}
