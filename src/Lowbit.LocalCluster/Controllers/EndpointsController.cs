using k8s.Models;
using Lowbit.LocalCluster.Store;
using Microsoft.Extensions.Logging;

namespace Lowbit.LocalCluster.Controllers;

/// <summary>
/// Endpoints and one EndpointSlice (<c>&lt;service&gt;-lowbit</c>, label kubernetes.io/service-name) per Service with
/// a selector: ready pods as addresses, running but unready pods as notReadyAddresses, target ports resolved
/// by number or by container port name. Both go when the Service goes.
/// </summary>
public sealed class EndpointsController
{
    private const string SliceSuffix = "-lowbit";

    private readonly ClusterApi _api;
    private readonly Informer _services;
    private readonly Informer _pods;
    private readonly ControllerLoop _loop;

    public EndpointsController(ClusterApi api, Informer services, Informer pods, TimeProvider time, ILogger logger)
    {
        _api = api;
        _services = services;
        _pods = pods;
        _loop = new ControllerLoop("endpoints-controller", ReconcileAsync, time, logger);
        services.OnChange((old, svc) => _loop.Enqueue((svc ?? old)!.Key));
        pods.OnChange((old, pod) =>
        {
            var ns = (pod ?? old)!.Namespace;
            foreach (var svc in _services.All().Where(s => s.Namespace == ns))
            {
                _loop.Enqueue(svc.Key);
            }
        });
    }

    public Task RunAsync(CancellationToken cancellationToken) => _loop.RunAsync(1, cancellationToken);

    private Task<Requeue> ReconcileAsync(string key, CancellationToken cancellationToken)
    {
        var (ns, name) = Typed.SplitKey(key);
        var stored = _services.Get(ns, name);
        if (stored is null)
        {
            DeleteIfExists(BuiltinResources.Endpoints, ns, name);
            DeleteIfExists(BuiltinResources.EndpointSlices, ns, name + SliceSuffix);
            return Task.FromResult(Requeue.Done);
        }
        var service = stored.As<V1Service>();
        if (service.Spec?.Selector is not { Count: > 0 } selector)
        {
            return Task.FromResult(Requeue.Done);
        }
        var pods = _pods.All()
            .Where(p => p.Namespace == ns && !p.IsDeleting && selector.All(kv => p.Labels.TryGetValue(kv.Key, out var v) && v == kv.Value))
            .Select(p => p.As<V1Pod>())
            .Where(p => p.Status?.PodIP is not null && p.Status.Phase is "Running" or "Pending")
            .OrderBy(p => p.Metadata.Name, StringComparer.Ordinal)
            .ToList();
        var ready = pods.Where(PodControl.IsReady).ToList();
        var notReady = pods.Where(p => !PodControl.IsReady(p)).ToList();
        var ports = (service.Spec.Ports ?? []).Select(p => (Service: p, Target: p.TargetPort?.Value ?? p.Port.ToString(System.Globalization.CultureInfo.InvariantCulture))).ToList();
        int ResolvePort(V1Pod pod, string target) =>
            int.TryParse(target, System.Globalization.CultureInfo.InvariantCulture, out var number) ? number
            : pod.Spec.Containers.SelectMany(c => c.Ports ?? []).FirstOrDefault(p => p.Name == target)?.ContainerPort ?? 0;

        var subsets = new List<V1EndpointSubset>();
        foreach (var group in pods.GroupBy(p => string.Join(",", ports.Select(port => ResolvePort(p, port.Target)))))
        {
            var sample = group.First();
            subsets.Add(new V1EndpointSubset
            {
                Addresses = NullIfEmpty(group.Where(PodControl.IsReady).Select(Address).ToList()),
                NotReadyAddresses = NullIfEmpty(group.Where(p => !PodControl.IsReady(p)).Select(Address).ToList()),
                Ports = NullIfEmpty(ports.Select(p => new Corev1EndpointPort { Port = ResolvePort(sample, p.Target), Name = p.Service.Name, Protocol = p.Service.Protocol ?? "TCP" }).ToList()),
            });
        }
        var endpoints = new V1Endpoints
        {
            ApiVersion = "v1",
            Kind = "Endpoints",
            Metadata = new V1ObjectMeta
            {
                Name = name,
                NamespaceProperty = ns,
                Labels = service.Metadata.Labels,
            },
            Subsets = NullIfEmpty(subsets),
        };
        Upsert(BuiltinResources.Endpoints, ns!, name, endpoints, (live, desired) => Typed.SameJson(live.Subsets, desired.Subsets) && Typed.SameJson(live.Metadata.Labels, desired.Metadata.Labels));

        var slice = new V1EndpointSlice
        {
            ApiVersion = "discovery.k8s.io/v1",
            Kind = "EndpointSlice",
            AddressType = "IPv4",
            Metadata = new V1ObjectMeta
            {
                Name = name + SliceSuffix,
                NamespaceProperty = ns,
                Labels = new Dictionary<string, string>(StringComparer.Ordinal)
                {
                    ["kubernetes.io/service-name"] = name,
                    ["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io",
                },
                OwnerReferences = [Typed.OwnerReference(service, "v1", "Service")],
            },
            Endpoints = ready.Concat(notReady).Select(p => new V1Endpoint
            {
                Addresses = [p.Status.PodIP],
                Conditions = new V1EndpointConditions { Ready = PodControl.IsReady(p), Serving = PodControl.IsReady(p), Terminating = false },
                NodeName = p.Spec.NodeName,
                TargetRef = new V1ObjectReference { Kind = "Pod", Name = p.Metadata.Name, NamespaceProperty = ns, Uid = p.Metadata.Uid },
            }).ToList(),
            Ports = pods.Count == 0 ? null : ports.Select(p => new Discoveryv1EndpointPort
            {
                Name = p.Service.Name ?? "",
                Port = ResolvePort(pods[0], p.Target),
                Protocol = p.Service.Protocol ?? "TCP",
            }).ToList(),
        };
        Upsert(BuiltinResources.EndpointSlices, ns!, slice.Metadata.Name, slice, (live, desired) => Typed.SameJson(live.Endpoints, desired.Endpoints) && Typed.SameJson(live.Ports, desired.Ports));
        return Task.FromResult(Requeue.Done);
    }

    private void Upsert<T>(ResourceType type, string ns, string name, T desired, Func<T, T, bool> same)
        where T : class, k8s.IKubernetesObject<V1ObjectMeta>
    {
        var live = _api.TryGet(type, ns, name);
        if (live is null)
        {
            _api.Create(type, ns, desired);
            return;
        }
        var liveModel = live.As<T>();
        if (same(liveModel, desired))
        {
            return;
        }
        desired.Metadata.ResourceVersion = liveModel.Metadata.ResourceVersion;
        _api.Replace(type, desired);
    }

    private void DeleteIfExists(ResourceType type, string? ns, string name)
    {
        try
        {
            _api.Delete(type, ns, name);
        }
        catch (ApiException ex) when (ex.Code == 404)
        {
        }
    }

    private static V1EndpointAddress Address(V1Pod pod) => new()
    {
        Ip = pod.Status.PodIP,
        NodeName = pod.Spec.NodeName,
        TargetRef = new V1ObjectReference { Kind = "Pod", Name = pod.Metadata.Name, NamespaceProperty = pod.Metadata.NamespaceProperty, Uid = pod.Metadata.Uid },
    };

    private static List<TItem>? NullIfEmpty<TItem>(List<TItem> items) => items.Count == 0 ? null : items;
}
