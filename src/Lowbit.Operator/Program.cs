using k8s.Exceptions;
using Lowbit.Operator.Runtime;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator;

/// <summary>
/// The <c>lowbit-operator</c> process. Connects with <c>--kubeconfig</c>/<c>--context</c>, KUBECONFIG,
/// ~/.kube/config or the in-cluster service account; settings under <c>--Operator:...</c>.
/// Exit codes: 0 after a graceful stop, 1 after a lost leader election or caches that never synced,
/// 2 for invalid settings or an unusable kubeconfig.
/// </summary>
public static class Program
{
    public const int InvalidConfiguration = 2;

    public static async Task<int> Main(string[] args)
    {
        try
        {
            var app = OperatorHost.Build(args, OperatorSetup.Configure);
            return await OperatorHost.RunAsync(app).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OptionsValidationException or KubeConfigException)
        {
            await Console.Error.WriteLineAsync($"lowbit-operator: {ex.Message}").ConfigureAwait(false);
            return InvalidConfiguration;
        }
    }
}
