using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;

namespace Lowbit.Engine.Tests.Serving;

/// <summary>SIGTERM on a real <c>lowbit-engine serve</c> process: the in-flight stream finishes, then the process exits 0.</summary>
public sealed class ServeShutdownTests
{
    [Fact]
    public async Task Does_finish_the_in_flight_stream_and_exit_0_on_sigterm()
    {
        int port;
        using (var probe = new TcpListener(IPAddress.Loopback, 0))
        {
            probe.Start();
            port = ((IPEndPoint)probe.LocalEndpoint).Port;
        }
        using var temp = new TempDir();
        var engine = Path.Combine(AppContext.BaseDirectory, "lowbit-engine.dll");
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            Environment = { ["LOWBIT_RESULT_FILE"] = temp.File("result.json") },
        };
        foreach (var arg in new[] { engine, "serve", "--model", TokenizerTests.FixtureDirectory, "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--max-context", "128", "--max-concurrency", "2", "--device", "cpu" })
        {
            start.ArgumentList.Add(arg);
        }
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}"), Timeout = TimeSpan.FromSeconds(60) };
            var watch = Stopwatch.StartNew();
            while (true)
            {
                try
                {
                    if ((await http.GetAsync("/ready")).IsSuccessStatusCode)
                    {
                        break;
                    }
                }
                catch (HttpRequestException) when (watch.Elapsed < TimeSpan.FromSeconds(60) && !process.HasExited)
                {
                }
                Assert.True(watch.Elapsed < TimeSpan.FromSeconds(60) && !process.HasExited, "the server did not become ready");
                await Task.Delay(100);
            }
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = new StringContent("""{"model":"tiny-llama","prompt":"And Moses said","max_tokens":60,"temperature":0,"ignore_eos":true,"stream":true}""", Encoding.UTF8, "application/json"),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            Assert.StartsWith("data: {", await reader.ReadLineAsync(), StringComparison.Ordinal);

            using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
            {
                await kill.WaitForExitAsync();
            }
            var rest = await reader.ReadToEndAsync();
            var events = rest.Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
            Assert.Equal("data: [DONE]", events[^1].Trim());
            Assert.Equal("length", (string?)JsonNode.Parse(events[^2].Trim()["data: ".Length..])!["choices"]![0]!["finish_reason"]);
            using var exit = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await process.WaitForExitAsync(exit.Token);

            Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {await stderr}");
            Assert.Contains("\"ok\":true", await File.ReadAllTextAsync(temp.File("result.json")), StringComparison.Ordinal);
            _ = await stdout;
        }
        finally
        {
            if (!process.HasExited)
            {
                process.Kill();
            }
        }
    }
}
