using System.Net;
using Lowbit.Api;
using Lowbit.Api.V1Alpha1;
using Lowbit.Engine.Protocol;
using Lowbit.Operator.Builders;
using Lowbit.Operator.Controllers;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator.Tests.Reconcilers;

/// <summary>The operator's own config.json fetch (issue 17, items 2 and 3): no Secret reads, a scheme allow-list,
/// a 1 MiB cap, a short timeout, and no remote error body in what it reports.</summary>
public sealed class ArchitectureResolverTests
{
    private sealed class Handler(Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> answer) : HttpMessageHandler
    {
        public List<HttpRequestMessage> Requests { get; } = [];

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            Requests.Add(request);
            return answer(request, cancellationToken);
        }
    }

    private static (ArchitectureResolver Resolver, Handler Handler) Resolver(Func<HttpRequestMessage, CancellationToken, Task<HttpResponseMessage>> answer, TimeSpan? timeout = null)
    {
        var handler = new Handler(answer);
        var options = Options.Create(new WorkloadOptions { HubEndpoint = "http://hub.invalid", ConfigFetchTimeout = timeout ?? TimeSpan.FromSeconds(10) });
        return (new ArchitectureResolver(new MemoryObjectCache([]), options, new HttpClient(handler)), handler);
    }

    private static ModelSource Url(string url) => new() { Url = url };

    [Fact]
    public async Task Does_refuse_a_non_http_scheme_as_invalid_spec_without_fetching()
    {
        var (resolver, handler) = Resolver((_, _) => throw new InvalidOperationException("must not fetch"));

        var result = await resolver.ResolveSourceAsync(null, Url("s3://bucket/models/custom"), "default", CancellationToken.None);

        var failed = Assert.IsType<ArchitectureResolution.Failed>(result);
        Assert.True(failed.Terminal);
        Assert.Equal(Conditions.Reasons.InvalidSpec, failed.Reason);
        Assert.Contains("spec.source.url", failed.Message, StringComparison.Ordinal);
        Assert.Empty(handler.Requests);
    }

    [Fact]
    public async Task Does_stop_reading_a_config_json_larger_than_1_mib()
    {
        var (resolver, _) = Resolver((_, _) => Task.FromResult(new HttpResponseMessage(HttpStatusCode.OK)
        {
            Content = new StreamContent(new MemoryStream(new byte[3 << 20])),
        }));

        var result = await resolver.ResolveSourceAsync(null, Url("https://models.example.com/custom"), "default", CancellationToken.None);

        var failed = Assert.IsType<ArchitectureResolution.Failed>(result);
        Assert.Contains("larger than 1024 KiB", failed.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_give_up_on_a_slow_server_after_the_timeout_and_report_pending()
    {
        var (resolver, _) = Resolver(async (_, token) =>
        {
            await Task.Delay(TimeSpan.FromSeconds(30), token);
            return new HttpResponseMessage(HttpStatusCode.OK);
        }, TimeSpan.FromMilliseconds(200));

        var result = await resolver.ResolveSourceAsync(null, Url("https://models.example.com/custom"), "default", CancellationToken.None);

        var failed = Assert.IsType<ArchitectureResolution.Failed>(result);
        Assert.False(failed.Terminal);
        Assert.Equal(Conditions.Reasons.Pending, failed.Reason);
    }

    [Fact]
    public async Task Does_not_echo_a_remote_error_body()
    {
        var (resolver, _) = Resolver((_, _) => Task.FromResult(new HttpResponseMessage(HttpStatusCode.InternalServerError)
        {
            Content = new StringContent("<html>internal-secret-stack-trace</html>"),
        }));

        var result = await resolver.ResolveSourceAsync(null, Url("https://models.example.com/custom"), "default", CancellationToken.None);

        var failed = Assert.IsType<ArchitectureResolution.Failed>(result);
        Assert.Contains("500", failed.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("internal-secret", failed.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Does_hand_a_gated_repo_to_the_inspect_job_without_reading_the_secret_or_fetching()
    {
        // The Kubernetes client is null: reading the Secret would throw.
        var (resolver, handler) = Resolver((_, _) => throw new InvalidOperationException("must not fetch"));
        var model = new QuantizedModel
        {
            Metadata = new k8s.Models.V1ObjectMeta { Name = "gated", NamespaceProperty = "default" },
            Spec = new QuantizedModelSpec
            {
                Source = new ModelSource { HuggingFace = new HuggingFaceSource { Repo = "acme/private-model", TokenSecretRef = new SecretKeyRef { Name = "hf", Key = "token" } } },
                Method = QuantizationMethod.Rtn,
                Bits = 4,
                Output = new OutputSpec { Pvc = new PvcSource { ClaimName = "models", Path = "gated" } },
            },
        };

        var result = await resolver.ResolveAsync(model, CancellationToken.None);

        Assert.IsType<ArchitectureResolution.NeedsInspect>(result);
        Assert.Empty(handler.Requests);
    }
}
