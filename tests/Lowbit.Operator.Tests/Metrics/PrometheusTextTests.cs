using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Telemetry;

namespace Lowbit.Operator.Tests.Metrics;

public sealed class PrometheusTextTests
{
    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    public void Does_parse_every_mutated_page_without_throwing_counting_bad_lines(int seed)
    {
        var page = System.Text.Encoding.UTF8.GetBytes(seed == 21 ? MetricsPages.Vllm : MetricsPages.LlamaCpp);
        var lines = MetricsPages.Vllm.Split('\n').Length;
        var run = Lowbit.Testing.Fuzzer.Run(page, seed, input =>
        {
            var parsed = PrometheusText.Parse(System.Text.Encoding.UTF8.GetString(input));
            Assert.InRange(parsed.MalformedLines, 0, input.Length + 1);
        }, _ => false);
        Assert.True(run >= 50 && lines > 0);
    }

    [Fact]
    public void Does_read_every_sample_of_a_vllm_page_with_labels_and_exponent_values()
    {
        var parsed = PrometheusText.Parse(MetricsPages.Vllm);

        Assert.Equal(0, parsed.MalformedLines);
        Assert.Equal(34, parsed.Samples.Count);
        var rss = Assert.Single(parsed.Samples, s => s.Name == "process_resident_memory_bytes");
        Assert.Equal(5.312651264e9, rss.Value);
        Assert.Empty(rss.Labels);
        var inf = Assert.Single(parsed.Samples, s => s.Name == "vllm:time_to_first_token_seconds_bucket" && s.Labels["le"] == "+Inf");
        Assert.Equal(40.0, inf.Value);
        Assert.Equal("chat", inf.Labels["model_name"]);
        var info = Assert.Single(parsed.Samples, s => s.Name == "vllm:cache_config_info");
        Assert.Equal(8, info.Labels.Count);
        Assert.Equal("4294967296", info.Labels["swap_space_bytes"]);
    }

    [Fact]
    public void Does_read_a_llamacpp_page_of_bare_series()
    {
        var parsed = PrometheusText.Parse(MetricsPages.LlamaCpp);

        Assert.Equal(0, parsed.MalformedLines);
        Assert.Equal(12, parsed.Samples.Count);
        Assert.Equal(4096, Assert.Single(parsed.Samples, s => s.Name == "llamacpp:tokens_predicted_total").Value);
        Assert.Equal(0.512, Assert.Single(parsed.Samples, s => s.Name == "llamacpp:prompt_seconds_total").Value);
    }

    [Fact]
    public void Does_unescape_label_values_and_accept_a_trailing_comma_and_blanks()
    {
        var parsed = PrometheusText.Parse("msdos_file_access_time_seconds{path=\"C:\\\\DIR\\\\FILE.TXT\",error=\"Cannot find file:\\n\\\"FILE.TXT\\\"\",} 1.458255915e9\n"
            + "spaced { a = \"x\" , b=\"y\" } 2\n"
            + "odd_escape{a=\"keep\\tthis\"} 3\n");

        Assert.Equal(0, parsed.MalformedLines);
        var file = parsed.Samples[0];
        Assert.Equal("C:\\DIR\\FILE.TXT", file.Labels["path"]);
        Assert.Equal("Cannot find file:\n\"FILE.TXT\"", file.Labels["error"]);
        Assert.Equal(1.458255915e9, file.Value);
        Assert.Equal("x", parsed.Samples[1].Labels["a"]);
        Assert.Equal("y", parsed.Samples[1].Labels["b"]);
        Assert.Equal("keep\\tthis", parsed.Samples[2].Labels["a"]);
    }

    [Fact]
    public void Does_read_nan_infinities_and_timestamps_with_crlf_line_ends()
    {
        var parsed = PrometheusText.Parse("a NaN\r\nb +Inf\r\nc -Inf 1395066363000\r\nd{x=\"1\"} 12.5 -1\r\ne Inf\r\n");

        Assert.Equal(0, parsed.MalformedLines);
        Assert.True(double.IsNaN(parsed.Samples[0].Value));
        Assert.Equal(double.PositiveInfinity, parsed.Samples[1].Value);
        Assert.Equal(double.NegativeInfinity, parsed.Samples[2].Value);
        Assert.Equal(1395066363000L, parsed.Samples[2].TimestampMs);
        Assert.Equal(-1L, parsed.Samples[3].TimestampMs);
        Assert.Null(parsed.Samples[1].TimestampMs);
        Assert.Equal(double.PositiveInfinity, parsed.Samples[4].Value);
    }

    [Theory]
    [InlineData("<html><body>404 page not found</body></html>")]
    [InlineData("metric{unterminated=\"x} 1")]
    [InlineData("metric{a=\"x\" b=\"y\"} 1")]
    [InlineData("metric{=\"x\"} 1")]
    [InlineData("metric{a=x} 1")]
    [InlineData("metric 1 2 3")]
    [InlineData("metric twelve")]
    [InlineData("metric")]
    [InlineData("9metric 1")]
    [InlineData("metric 1 1.5")]
    [InlineData("metric{a=\"x\\")]
    [InlineData("{a=\"x\"} 1")]
    [InlineData("metric-name 1")]
    public void Does_skip_and_count_a_malformed_line_without_throwing(string line)
    {
        var parsed = PrometheusText.Parse($"good_before 1\n{line}\ngood_after 2\n");

        Assert.Equal(1, parsed.MalformedLines);
        Assert.Equal(["good_before", "good_after"], parsed.Samples.Select(s => s.Name));
    }

    [Fact]
    public void Does_survive_random_garbage()
    {
        var random = new Random(20261122);
        const string Alphabet = "ab_:{}=\",\\ \n\t#019.+-eINfa\r\u00e9";
        for (var i = 0; i < 2000; i++)
        {
            var text = new string(Enumerable.Range(0, random.Next(0, 200)).Select(_ => Alphabet[random.Next(Alphabet.Length)]).ToArray());
            var parsed = PrometheusText.Parse(text);
            Assert.All(parsed.Samples, s => Assert.False(string.IsNullOrEmpty(s.Name)));
        }

        Assert.Empty(PrometheusText.Parse(null).Samples);
        Assert.Empty(PrometheusText.Parse("").Samples);
    }

    [Fact]
    public void Does_skip_unwanted_series_before_parsing_their_labels()
    {
        var parsed = PrometheusText.Parse("unwanted{broken 1\nwanted 2\n", name => name == "wanted");

        Assert.Equal(0, parsed.MalformedLines);
        Assert.Equal(2, Assert.Single(parsed.Samples).Value);
    }

    [Fact]
    public void Does_sum_vllm_counters_over_label_sets_and_read_ttft_totals()
    {
        var dialect = EngineMetricDialect.For(ServingRuntime.Vllm);
        var reading = dialect.Read(PrometheusText.Parse(MetricsPages.Vllm, dialect.Wants), out var error);

        Assert.Null(error);
        Assert.Equal(new EngineReading(67890, new HistogramTotals(6.5, 40)), reading);
    }

    [Fact]
    public void Does_read_llamacpp_tokens_without_a_ttft_histogram()
    {
        var dialect = EngineMetricDialect.For(ServingRuntime.LlamaCpp);
        var reading = dialect.Read(PrometheusText.Parse(MetricsPages.LlamaCpp, dialect.Wants), out var error);

        Assert.Null(error);
        Assert.Equal(new EngineReading(4096, null), reading);
    }

    [Fact]
    public void Does_report_the_missing_counter_when_a_page_is_of_another_runtime()
    {
        var dialect = EngineMetricDialect.For(ServingRuntime.Lowbit);
        var reading = dialect.Read(PrometheusText.Parse(MetricsPages.Vllm, dialect.Wants), out var error);

        Assert.Null(reading);
        Assert.Equal("no lowbit:generation_tokens_total series (0 wanted samples, 0 malformed lines)", error);
    }

    [Theory]
    [InlineData("NaN")]
    [InlineData("+Inf")]
    [InlineData("-5")]
    public void Does_reject_a_token_counter_that_is_no_counter_value(string value)
    {
        var dialect = EngineMetricDialect.For(ServingRuntime.LlamaCpp);
        var reading = dialect.Read(PrometheusText.Parse($"llamacpp:tokens_predicted_total {value}\n", dialect.Wants), out var error);

        Assert.Null(reading);
        Assert.StartsWith("llamacpp:tokens_predicted_total is ", error, StringComparison.Ordinal);
    }
}
