using System.Reflection;

namespace Lowbit.Architecture.Tests;

/// <summary>
/// The arrows of DESIGN.md point one way. These tests read each assembly's references (transitively
/// through our own assemblies) and fail when a layer reaches something it must not.
/// </summary>
public sealed class DependencyRulesTests
{
    private static readonly string[] KubernetesPrefixes = ["KubernetesClient", "k8s"];
    private static readonly string[] TorchPrefixes = ["TorchSharp", "LibTorchSharp"];
    private static readonly string[] AspNetPrefixes = ["Microsoft.AspNetCore"];

    [Theory]
    [InlineData("Lowbit.Planner")]
    [InlineData("Lowbit.Engine.Protocol")]
    public void Pure_libraries_reference_only_the_base_class_library(string assembly)
    {
        var forbidden = ReferencesOf(assembly)
            .Where(n => !n.StartsWith("System", StringComparison.Ordinal)
                        && n != "netstandard" && n != "mscorlib"
                        && !n.StartsWith("Lowbit.", StringComparison.Ordinal))
            .ToList();
        Assert.True(forbidden.Count == 0, $"{assembly} references {string.Join(", ", forbidden)}");
    }

    [Fact]
    public void Planner_does_not_reference_Kubernetes_or_TorchSharp()
    {
        AssertNone("Lowbit.Planner", KubernetesPrefixes.Concat(TorchPrefixes).Concat(AspNetPrefixes));
    }

    [Fact]
    public void Engine_does_not_reference_Kubernetes()
    {
        AssertNone("lowbit-engine", KubernetesPrefixes);
    }

    [Fact]
    public void Operator_does_not_reference_TorchSharp()
    {
        AssertNone("lowbit-operator", TorchPrefixes);
    }

    [Fact]
    public void Api_does_not_reference_the_planner_operator_or_engine()
    {
        AssertNone("Lowbit.Api", ["Lowbit.Planner", "lowbit-operator", "lowbit-engine", "Lowbit.LocalCluster", "TorchSharp"]);
    }

    [Fact]
    public void Operator_runtime_references_nothing_else_of_Lowbit()
    {
        // The controller runtime is generic over Kubernetes objects, so another operator can reuse it.
        var ours = ReferencesOf("Lowbit.Operator.Runtime").Where(IsOurs).ToList();
        Assert.True(ours.Count == 0, $"Lowbit.Operator.Runtime references {string.Join(", ", ours)}");
    }

    [Fact]
    public void Operator_does_not_reference_the_local_cluster()
    {
        // The local cluster is a development tool (an embedded API server); the shipped operator never carries it.
        AssertNone("lowbit-operator", ["Lowbit.LocalCluster"]);
    }

    [Fact]
    public void Rules_detect_a_forbidden_reference()
    {
        // Guards the guard: the CLI really does reference System.CommandLine, so a rule forbidding it
        // must fail. If this passes vacuously, the reference walk is broken.
        Assert.ThrowsAny<Exception>(() => AssertNone("lowbit", ["System.CommandLine"]));
    }

    private static void AssertNone(string assembly, IEnumerable<string> prefixes)
    {
        var refs = ReferencesOf(assembly);
        var bad = refs.Where(r => prefixes.Any(p => r.StartsWith(p, StringComparison.Ordinal))).ToList();
        Assert.True(bad.Count == 0, $"{assembly} references {string.Join(", ", bad)} (all: {string.Join(", ", refs)})");
    }

    /// <summary>Names of every assembly reachable from <paramref name="root"/> through Lowbit assemblies.</summary>
    private static SortedSet<string> ReferencesOf(string root)
    {
        var seen = new SortedSet<string>(StringComparer.Ordinal);
        var queue = new Queue<Assembly>([Load(root)]);
        while (queue.Count > 0)
        {
            foreach (var name in queue.Dequeue().GetReferencedAssemblies())
            {
                if (name.Name is null || !seen.Add(name.Name))
                {
                    continue;
                }
                if (IsOurs(name.Name))
                {
                    queue.Enqueue(Load(name.Name));
                }
            }
        }
        return seen;
    }

    private static bool IsOurs(string name) =>
        name.StartsWith("Lowbit.", StringComparison.Ordinal) || name.StartsWith("lowbit", StringComparison.Ordinal);

    private static Assembly Load(string name) => Assembly.Load(new AssemblyName(name));
}
