using Lowbit.Engine.Formats;
using Lowbit.Engine.Checkpoints;

namespace Lowbit.Engine.Tests;

/// <summary>
/// An independent float64 Llama forward pass over plain arrays, written from the HF semantics in
/// engine-formats.md §2.3–2.4 (no TorchSharp): the oracle the TorchSharp model is checked against.
/// </summary>
internal sealed class ReferenceLlama
{
    private readonly LlamaConfig _c;
    private readonly Func<string, double[]> _w;

    public ReferenceLlama(LlamaConfig config, SafetensorsFile file)
    {
        _c = config;
        _w = name =>
        {
            var info = file.Get(name);
            var bytes = file.GetBytes(name);
            return info.Dtype switch
            {
                SafetensorsDtype.F32 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>(bytes).ToArray().Select(v => (double)v).ToArray(),
                SafetensorsDtype.F64 => System.Runtime.InteropServices.MemoryMarshal.Cast<byte, double>(bytes).ToArray(),
                _ => throw new NotSupportedException(info.Dtype.ToString()),
            };
        };
    }

    public double[][] Logits(int[] ids)
    {
        int h = _c.HiddenSize, d = _c.HeadDim, heads = _c.NumAttentionHeads, kvHeads = _c.NumKeyValueHeads, t = ids.Length;
        var embed = _w("model.embed_tokens.weight");
        var x = ids.Select(id => embed.AsSpan(id * h, h).ToArray()).ToArray();
        var inv = InverseFrequencies();
        for (var l = 0; l < _c.NumHiddenLayers; l++)
        {
            var p = $"model.layers.{l}.";
            var normed = x.Select(v => RmsNorm(v, _w(p + "input_layernorm.weight"))).ToArray();
            var q = normed.Select(v => Linear(v, p + "self_attn.q_proj", heads * d, _c.QkvBias)).ToArray();
            var k = normed.Select(v => Linear(v, p + "self_attn.k_proj", kvHeads * d, _c.QkvBias)).ToArray();
            var vv = normed.Select(v => Linear(v, p + "self_attn.v_proj", kvHeads * d, _c.QkvBias)).ToArray();
            for (var pos = 0; pos < t; pos++)
            {
                Rope(q[pos], heads, pos, inv);
                Rope(k[pos], kvHeads, pos, inv);
            }
            var attended = new double[t][];
            for (var i = 0; i < t; i++)
            {
                attended[i] = new double[heads * d];
                for (var head = 0; head < heads; head++)
                {
                    var kvHead = head / (heads / kvHeads);
                    var scores = new double[i + 1];
                    for (var j = 0; j <= i; j++)
                    {
                        double s = 0;
                        for (var e = 0; e < d; e++)
                        {
                            s += q[i][head * d + e] * k[j][kvHead * d + e];
                        }
                        scores[j] = s / Math.Sqrt(d);
                    }
                    var max = scores.Max();
                    var exp = scores.Select(s => Math.Exp(s - max)).ToArray();
                    var sum = exp.Sum();
                    for (var j = 0; j <= i; j++)
                    {
                        for (var e = 0; e < d; e++)
                        {
                            attended[i][head * d + e] += exp[j] / sum * vv[j][kvHead * d + e];
                        }
                    }
                }
            }
            for (var i = 0; i < t; i++)
            {
                var o = Linear(attended[i], p + "self_attn.o_proj", h, _c.OutputBias);
                for (var e = 0; e < h; e++)
                {
                    x[i][e] += o[e];
                }
                var n2 = RmsNorm(x[i], _w(p + "post_attention_layernorm.weight"));
                var gate = Linear(n2, p + "mlp.gate_proj", _c.IntermediateSize, _c.MlpBias);
                var up = Linear(n2, p + "mlp.up_proj", _c.IntermediateSize, _c.MlpBias);
                var act = gate.Select((g, e) => g / (1 + Math.Exp(-g)) * up[e]).ToArray();
                var down = Linear(act, p + "mlp.down_proj", h, _c.MlpBias);
                for (var e = 0; e < h; e++)
                {
                    x[i][e] += down[e];
                }
            }
        }
        var head2 = _c.TieWordEmbeddings ? "model.embed_tokens" : "lm_head";
        return x.Select(v => Linear(RmsNorm(v, _w("model.norm.weight")), head2, _c.VocabSize, false)).ToArray();
    }

    private double[] InverseFrequencies()
    {
        var d = _c.HeadDim;
        var inv = new double[d / 2];
        for (var i = 0; i < d / 2; i++)
        {
            var f = 1.0 / Math.Pow(_c.RopeTheta, 2.0 * i / d);
            if (_c.RopeScaling is { Type: "llama3" } s)
            {
                var wavelength = 2 * Math.PI / f;
                var low = s.OriginalMaxPositionEmbeddings / s.LowFreqFactor;
                var high = s.OriginalMaxPositionEmbeddings / s.HighFreqFactor;
                if (wavelength > low)
                {
                    f /= s.Factor;
                }
                else if (wavelength >= high)
                {
                    var smooth = (s.OriginalMaxPositionEmbeddings / wavelength - s.LowFreqFactor) / (s.HighFreqFactor - s.LowFreqFactor);
                    f = (1 - smooth) * f / s.Factor + smooth * f;
                }
            }
            inv[i] = f;
        }
        return inv;
    }

    private void Rope(double[] v, int heads, int pos, double[] inv)
    {
        var d = _c.HeadDim;
        for (var head = 0; head < heads; head++)
        {
            for (var i = 0; i < d / 2; i++)
            {
                var a = v[head * d + i];
                var b = v[head * d + i + d / 2];
                var angle = pos * inv[i];
                v[head * d + i] = a * Math.Cos(angle) - b * Math.Sin(angle);
                v[head * d + i + d / 2] = b * Math.Cos(angle) + a * Math.Sin(angle);
            }
        }
    }

    private double[] RmsNorm(double[] v, double[] weight)
    {
        var rms = Math.Sqrt(v.Sum(e => e * e) / v.Length + _c.RmsNormEps);
        return v.Select((e, i) => e / rms * weight[i]).ToArray();
    }

    private double[] Linear(double[] input, string prefix, int outFeatures, bool bias)
    {
        var w = _w(prefix + ".weight");
        var b = bias ? _w(prefix + ".bias") : null;
        var result = new double[outFeatures];
        for (var o = 0; o < outFeatures; o++)
        {
            double s = b?[o] ?? 0;
            for (var i = 0; i < input.Length; i++)
            {
                s += w[o * input.Length + i] * input[i];
            }
            result[o] = s;
        }
        return result;
    }
}
