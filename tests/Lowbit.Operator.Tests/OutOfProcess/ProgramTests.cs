namespace Lowbit.Operator.Tests.OutOfProcess;

/// <summary>The operator program's own start-up checks (the runtime's host is tested in Lowbit.Operator.Runtime.Tests).</summary>
public sealed class ProgramTests
{
    [Fact]
    public async Task Does_exit_with_a_clear_message_for_a_missing_kubeconfig()
    {
        var error = new StringWriter();
        var original = Console.Error;
        Console.SetError(error);
        int code;
        try
        {
            code = await Program.Main(["--kubeconfig=/nonexistent/kubeconfig", "--urls=http://127.0.0.1:0"]);
        }
        finally
        {
            Console.SetError(original);
        }

        Assert.Equal(Program.InvalidConfiguration, code);
        Assert.Contains("--kubeconfig: file '/nonexistent/kubeconfig' does not exist", error.ToString(), StringComparison.Ordinal);
    }
}
