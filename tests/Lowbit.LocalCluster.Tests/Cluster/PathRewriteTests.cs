using Lowbit.LocalCluster.Kubelet;

namespace Lowbit.LocalCluster.Tests.Cluster;

public sealed class PathRewriteTests
{
    private static readonly List<(string From, string To)> Mounts =
    [
        ("/tmp", "/state/pods/p1/volumes/tmp"),
        ("/mnt/models", "/tmp/state/pvc/default/models"),
        ("/data", "/state/pods/p1/volumes/data"),
    ];

    [Fact]
    public void Does_not_rewrite_a_replacement_again_when_it_lies_under_another_mount()
    {
        // The claim's local folder is under /tmp; the container also mounts an emptyDir at /tmp.
        Assert.Equal("/tmp/state/pvc/default/models/tiny", ProcessRuntime.Rewrite("/mnt/models/tiny", Mounts));
    }

    [Fact]
    public void Does_rewrite_every_whole_segment_occurrence_and_nothing_else()
    {
        Assert.Equal("--in=/state/pods/p1/volumes/data/x --out /database /x/data /state/pods/p1/volumes/tmp",
            ProcessRuntime.Rewrite("--in=/data/x --out /database /x/data /tmp", Mounts));
    }
}
