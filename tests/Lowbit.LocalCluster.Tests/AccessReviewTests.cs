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

    [Fact]
    public async Task Does_authorize_requests_made_with_a_service_account_token_by_its_rbac_bindings()
    {
        var token = _cluster.Server.Tokens.IssueServiceAccountToken("apps", "reader");
        var denied = await _cluster.KubectlAsync("--token", token, "get", "configmaps", "-n", "authz-team");
        Assert.NotEqual(0, denied.ExitCode);
        Assert.Contains("configmaps is forbidden: User \"system:serviceaccount:apps:reader\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"authz-team\"",
            denied.StdErr, StringComparison.Ordinal);

        await _cluster.Kubectl("create", "namespace", "authz-team");
        await _cluster.Kubectl("create", "role", "cm-reader", "-n", "authz-team", "--verb=list,get", "--resource=configmaps");
        await _cluster.Kubectl("create", "rolebinding", "reader-cm", "-n", "authz-team", "--role=cm-reader", "--serviceaccount=apps:reader");
        var allowed = await _cluster.KubectlAsync("--token", token, "get", "configmaps", "-n", "authz-team");
        Assert.True(allowed.ExitCode == 0, allowed.StdErr);
        var otherNamespace = await _cluster.KubectlAsync("--token", token, "get", "configmaps", "-n", "default");
        Assert.Contains("forbidden", otherNamespace.StdErr, StringComparison.Ordinal);
        var write = await _cluster.KubectlAsync("--token", token, "create", "configmap", "x", "-n", "authz-team");
        Assert.Contains("cannot create resource \"configmaps\"", write.StdErr, StringComparison.Ordinal);

        // The kubeconfig's administrator (system:masters) is never asked; an unknown token is not let in at all.
        Assert.Equal(0, (await _cluster.KubectlAsync("get", "configmaps", "-n", "default")).ExitCode);
        var unknown = await _cluster.KubectlAsync("--token", "not-a-token", "get", "configmaps", "-n", "authz-team");
        Assert.Contains("Unauthorized", unknown.StdErr, StringComparison.Ordinal);
    }
}
