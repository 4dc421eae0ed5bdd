using Lowbit.Operator.Runtime;

namespace Lowbit.Operator;

/// <summary>
/// The <c>lowbit-operator</c> process. Connects with <c>--kubeconfig</c>/<c>--context</c>, KUBECONFIG,
/// ~/.kube/config or the in-cluster service account; settings under <c>--Operator:...</c>.
/// </summary>
public static class Program
{
    public static async Task<int> Main(string[] args)
    {
        var app = OperatorHost.Build(args, OperatorSetup.Configure);
        return await OperatorHost.RunAsync(app).ConfigureAwait(false);
    }
}
