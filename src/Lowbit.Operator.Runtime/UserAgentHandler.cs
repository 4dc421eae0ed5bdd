using System.Reflection;

namespace Lowbit.Operator.Runtime;

/// <summary>
/// Sets <c>User-Agent: lowbit-operator/&lt;version&gt; (&lt;identity&gt;)</c> on every API request, replacing the
/// client library's default, so requests of two operator instances can be told apart in the API server's audit
/// log (and in the embedded server's journal).
/// </summary>
public sealed class UserAgentHandler(string userAgent) : DelegatingHandler
{
    public string UserAgent { get; } = userAgent ?? throw new ArgumentNullException(nameof(userAgent));

    /// <summary>The User-Agent of an operator with leader-election identity <paramref name="identity"/>.</summary>
    public static string For(string identity)
    {
        ArgumentException.ThrowIfNullOrEmpty(identity);
        var version = typeof(UserAgentHandler).Assembly.GetName().Version ?? new Version(0, 0);
        return $"lowbit-operator/{version.ToString(3)} ({identity})";
    }

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        request.Headers.UserAgent.Clear();
        request.Headers.TryAddWithoutValidation("User-Agent", UserAgent);
        return base.SendAsync(request, cancellationToken);
    }
}
