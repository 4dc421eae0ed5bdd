using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Auth;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary>TokenReview and SubjectAccessReview on the embedded server, created with the real kubectl.</summary>
public sealed class AccessReviewTests : IClassFixture<ClusterFixture>
{
    private readonly ClusterFixture _cluster;

    public AccessReviewTests(ClusterFixture cluster) => _cluster = cluster;

    private async Task<JsonObject> CreateAsync(string yaml)
    {
        var file = Path.GetTempFileName();
        try
        {
            await File.WriteAllTextAsync(file, yaml);
            return JsonNode.Parse(await _cluster.Kubectl("create", "-f", file, "-o", "json"))!.AsObject();
        }
        finally
        {
            File.Delete(file);
        }
    }

    [Fact]
    public async Task Does_authenticate_issued_service_account_tokens_and_reject_unknown_ones()
    {
        var token = _cluster.Server.Tokens.IssueServiceAccountToken("monitoring", "prometheus");
        var known = await CreateAsync($"{{apiVersion: authentication.k8s.io/v1, kind: TokenReview, spec: {{token: {token}}}}}");
        Assert.Equal(true, (bool?)known["status"]!["authenticated"]);
        Assert.Equal("system:serviceaccount:monitoring:prometheus", (string?)known["status"]!["user"]!["username"]);
        Assert.Contains("system:serviceaccounts:monitoring", known["status"]!["user"]!["groups"]!.AsArray().Select(g => (string?)g));

        var unknown = await CreateAsync("{apiVersion: authentication.k8s.io/v1, kind: TokenReview, spec: {token: not-a-token}}");
        Assert.Equal(false, (bool?)unknown["status"]!["authenticated"]);
        Assert.Null(_cluster.Server.Api.TryGet(BuiltinResources.TokenReviews, null, "x"));
    }

    [Fact]
    public async Task Does_allow_what_rbac_bindings_grant_and_nothing_else()
    {
        const string Sar = "{{apiVersion: authorization.k8s.io/v1, kind: SubjectAccessReview, spec: {{user: \"system:serviceaccount:obs:scraper\", groups: [system:serviceaccounts], {0}}}}}";
        var metrics = string.Format(System.Globalization.CultureInfo.InvariantCulture, Sar, "nonResourceAttributes: {path: /metrics, verb: get}");
        var pods = string.Format(System.Globalization.CultureInfo.InvariantCulture, Sar, "resourceAttributes: {namespace: team, verb: list, resource: pods}");
        var podsElsewhere = string.Format(System.Globalization.CultureInfo.InvariantCulture, Sar, "resourceAttributes: {namespace: other, verb: list, resource: pods}");
        Assert.Equal(false, (bool?)(await CreateAsync(metrics))["status"]!["allowed"]);
        Assert.Equal(false, (bool?)(await CreateAsync(pods))["status"]!["allowed"]);

        await _cluster.Kubectl("create", "clusterrole", "metrics-reader", "--verb=get", "--non-resource-url=/metrics");
        await _cluster.Kubectl("create", "clusterrolebinding", "scraper-metrics", "--clusterrole=metrics-reader", "--serviceaccount=obs:scraper");
        await _cluster.Kubectl("create", "namespace", "team");
        await _cluster.Kubectl("create", "role", "pod-lister", "-n", "team", "--verb=list", "--resource=pods");
        await _cluster.Kubectl("create", "rolebinding", "scraper-pods", "-n", "team", "--role=pod-lister", "--serviceaccount=obs:scraper");

        var allowed = await CreateAsync(metrics);
        Assert.Equal(true, (bool?)allowed["status"]!["allowed"]);
        Assert.Contains("scraper-metrics", (string?)allowed["status"]!["reason"], StringComparison.Ordinal);
        Assert.Equal(true, (bool?)(await CreateAsync(pods))["status"]!["allowed"]);
        Assert.Equal(false, (bool?)(await CreateAsync(podsElsewhere))["status"]!["allowed"]);
        Assert.Equal(false, (bool?)(await CreateAsync(metrics.Replace("/metrics", "/debug", StringComparison.Ordinal)))["status"]!["allowed"]);
    }

    [Fact]
    public void Does_allow_system_masters_everything()
    {
        var (allowed, _) = RbacAuthorizer.Authorize(_cluster.Server.Api, new UserInfo { Username = "root", Groups = ["system:masters"] },
            new AccessAttributes { Verb = "delete", Resource = "secrets", Namespace = "kube-system" });
        Assert.True(allowed);
        Assert.Equal(TokenAuthenticator.AdminUser, _cluster.Server.Tokens.Authenticate(_cluster.Server.Token)?.Username);
    }
}
