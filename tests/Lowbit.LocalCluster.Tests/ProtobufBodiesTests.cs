using System.Collections.Frozen;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Lowbit.LocalCluster.Http;
using Lowbit.LocalCluster.Store;

namespace Lowbit.LocalCluster.Tests;

/// <summary>The schema-driven protobuf decoder on hand-built bytes: wire edge cases, Kubernetes envelope, errors.</summary>
public sealed class ProtobufBodiesTests
{
    [Fact]
    public void Does_decode_a_deployment_with_nested_messages_maps_and_multi_byte_varints()
    {
        var container = new Proto().Str(1, "web").Str(2, "nginx:1.27")
            .Msg(6, new Proto().Str(1, "").Int(2, 0).Int(3, 8080).Str(4, "TCP"))
            .Msg(8, new Proto().Entry(1, "cpu", new Proto().Str(1, "500m")).Entry(2, "memory", new Proto().Str(1, "64Mi")))
            .Int(16, 0);
        var spec = new Proto()
            .Int(1, 300)
            .Msg(2, new Proto().Entry(1, "app", "web"))
            .Msg(3, new Proto().Msg(1, new Proto().Entry(11, "app", "web")).Msg(2, new Proto().Msg(2, container).Str(3, "Always")))
            .Msg(4, new Proto().Str(1, "RollingUpdate").Msg(2, new Proto()
                .Msg(1, new Proto().Int(1, 1).Int(2, 0).Str(3, "25%"))
                .Msg(2, new Proto().Int(1, 0).Int(2, 2))))
            .Int(5, 0).Int(6, 0).Int(7, 0);
        var body = Proto.Envelope("apps/v1", "Deployment", new Proto()
            .Msg(1, new Proto().Str(1, "web").Str(3, "prod").Entry(11, "app", "web").Entry(12, "note", "ünïcode").Msg(8, new Proto()))
            .Msg(2, spec)
            .Msg(3, new Proto().Int(2, 7)));

        var obj = ProtobufBodies.Decode(body);

        var expected = JsonNode.Parse("""
            {
              "apiVersion": "apps/v1", "kind": "Deployment",
              "metadata": { "name": "web", "namespace": "prod", "labels": { "app": "web" }, "annotations": { "note": "ünïcode" } },
              "spec": {
                "replicas": 300,
                "selector": { "matchLabels": { "app": "web" } },
                "template": {
                  "metadata": { "labels": { "app": "web" } },
                  "spec": {
                    "containers": [ {
                      "name": "web", "image": "nginx:1.27",
                      "ports": [ { "containerPort": 8080, "protocol": "TCP" } ],
                      "resources": { "limits": { "cpu": "500m" }, "requests": { "memory": "64Mi" } }
                    } ],
                    "restartPolicy": "Always"
                  }
                },
                "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": "25%", "maxSurge": 2 } },
                "revisionHistoryLimit": 0
              }
            }
            """);
        Assert.True(JsonNode.DeepEquals(expected, obj), obj.ToJsonString());
    }

    [Fact]
    public void Does_decode_a_pod_with_volumes_env_probes_and_security_context()
    {
        var volume = new Proto().Str(1, "cfg").Msg(2, new Proto().Msg(19, new Proto()
            .Msg(1, new Proto().Str(1, "settings")).Msg(2, new Proto().Str(1, "a").Str(2, "a.txt")).Int(3, 420)));
        var container = new Proto().Str(1, "app").Str(2, "img")
            .Msg(7, new Proto().Str(1, "POD").Msg(3, new Proto().Msg(1, new Proto().Str(2, "metadata.name"))))
            .Msg(9, new Proto().Str(1, "cfg").Int(2, 1).Str(3, "/etc/cfg"))
            .Msg(11, new Proto().Msg(1, new Proto().Msg(2, new Proto().Str(1, "/healthz").Msg(2, new Proto().Int(1, 1).Str(3, "http")))).Int(4, 5))
            .Msg(15, new Proto().Msg(1, new Proto().Str(2, "ALL")).Int(5, 1).Int(7, 0));
        var spec = new Proto().Msg(1, volume).Msg(2, container).Int(4, 0).Entry(7, "gpu", "a100")
            .Msg(22, new Proto().Str(1, "k").Str(2, "Exists").Str(4, "NoExecute").Int(5, 30));

        var obj = ProtobufBodies.Decode(Proto.Envelope("v1", "Pod", new Proto().Msg(1, new Proto().Str(1, "p")).Msg(2, spec)));

        var expected = JsonNode.Parse("""
            {
              "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
              "spec": {
                "volumes": [ { "name": "cfg", "configMap": { "name": "settings", "items": [ { "key": "a", "path": "a.txt" } ], "defaultMode": 420 } } ],
                "containers": [ {
                  "name": "app", "image": "img",
                  "env": [ { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } } ],
                  "volumeMounts": [ { "name": "cfg", "readOnly": true, "mountPath": "/etc/cfg" } ],
                  "readinessProbe": { "httpGet": { "path": "/healthz", "port": "http" }, "periodSeconds": 5 },
                  "securityContext": { "capabilities": { "drop": [ "ALL" ] }, "runAsNonRoot": true, "allowPrivilegeEscalation": false }
                } ],
                "terminationGracePeriodSeconds": 0,
                "nodeSelector": { "gpu": "a100" },
                "tolerations": [ { "key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30 } ]
              }
            }
            """);
        Assert.True(JsonNode.DeepEquals(expected, obj), obj.ToJsonString());
    }

    [Fact]
    public void Does_skip_unknown_fields_of_every_wire_type()
    {
        var meta = new Proto().Str(1, "cm").Int(90, 1).Fixed32(91, 0xdeadbeef).Fixed64(92, 42).Str(93, "ignored").Msg(94, new Proto().Int(1, 5));
        var body = Proto.Envelope("v1", "ConfigMap", new Proto().Msg(1, meta).Entry(2, "k", "v").Int(77, 9));

        var obj = ProtobufBodies.Decode(body);

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm"},"data":{"k":"v"}}"""), obj), obj.ToJsonString());
    }

    [Fact]
    public void Does_read_negative_int32_and_int64_from_ten_byte_varints()
    {
        var negativeFive = new Proto().Int(2, -5).ToArray();
        Assert.Equal(11, negativeFive.Length);

        var priority = ProtobufBodies.Decode(Proto.Envelope("scheduling.k8s.io/v1", "PriorityClass",
            new Proto().Msg(1, new Proto().Str(1, "low")).Int(2, -5).Int(3, 0).Str(4, "below default")));
        var security = ProtobufBodies.DecodeMessage(new Proto().Int(2, -1).Int(5, long.MinValue).Int(6, int.MaxValue + 1L).ToArray(),
            KubernetesProtoSchemas.Default, "PodSecurityContext");

        Assert.Equal(-5, (int)priority["value"]!);
        Assert.False(priority.ContainsKey("globalDefault"));
        Assert.Equal(-1L, (long)security["runAsUser"]!);
        Assert.Equal(long.MinValue, (long)security["fsGroup"]!);
        Assert.Equal(int.MaxValue + 1L, (long)security["runAsGroup"]!);
    }

    [Fact]
    public void Does_read_packed_and_unpacked_repeated_fields_alike()
    {
        var unpacked = new Proto().Int(4, 1).Int(4, 2).Int(4, 300).Int(4, -7);
        var packed = new Proto().Bytes(4, new Proto().Raw(1).Raw(2).Raw(300).Raw(unchecked((ulong)-7L)).ToArray());
        var mixed = new Proto().Int(4, 1).Bytes(4, new Proto().Raw(2).Raw(300).ToArray()).Int(4, -7);

        var results = new[] { unpacked, packed, mixed }
            .Select(p => ProtobufBodies.DecodeMessage(p.ToArray(), KubernetesProtoSchemas.Default, "PodSecurityContext")["supplementalGroups"])
            .ToList();

        Assert.All(results, r => Assert.True(JsonNode.DeepEquals(JsonNode.Parse("[1,2,300,-7]"), r), r?.ToJsonString()));
    }

    [Fact]
    public void Does_keep_empty_strings_and_empty_messages_inside_lists_and_pointer_fields()
    {
        var rule = new Proto().Str(1, "get").Str(2, "").Str(3, "pods");
        var role = ProtobufBodies.Decode(Proto.Envelope("rbac.authorization.k8s.io/v1", "Role", new Proto().Msg(1, new Proto().Str(1, "r")).Msg(2, rule)));
        var volume = ProtobufBodies.DecodeMessage(new Proto().Str(1, "scratch").Msg(2, new Proto().Msg(2, new Proto())).ToArray(), KubernetesProtoSchemas.Default, "Volume");
        var pdb = ProtobufBodies.DecodeMessage(new Proto().Msg(1, new Proto().Int(1, 0).Int(2, 0)).Msg(2, new Proto()).ToArray(),
            KubernetesProtoSchemas.Default, "PodDisruptionBudgetSpec");

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""[{"verbs":["get"],"apiGroups":[""],"resources":["pods"]}]"""), role["rules"]));
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"name":"scratch","emptyDir":{}}"""), volume), volume.ToJsonString());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"minAvailable":0,"selector":{}}"""), pdb), pdb.ToJsonString());
    }

    [Fact]
    public void Does_write_times_bytes_inline_messages_and_durations()
    {
        var meta = ProtobufBodies.DecodeMessage(new Proto().Str(1, "x").Msg(8, new Proto().Int(1, 1_700_000_000).Int(2, 5)).Msg(9, new Proto()).ToArray(),
            KubernetesProtoSchemas.Default, "ObjectMeta");
        var secret = ProtobufBodies.Decode(Proto.Envelope("v1", "Secret", new Proto().Entry(2, "blob", [0, 1, 2, 255]).Str(3, "Opaque")));
        var keyRef = ProtobufBodies.DecodeMessage(new Proto().Msg(1, new Proto().Str(1, "settings")).Str(2, "mode").Int(3, 0).ToArray(),
            KubernetesProtoSchemas.Default, "ConfigMapKeySelector");
        var timing = new ProtoSchemaSet(
            [new ProtoMessage("Timing", new[] { new ProtoField(1, "every", ProtoKind.Duration), new ProtoField(2, "never", ProtoKind.Duration) }
                .ToFrozenDictionary(f => f.Number))],
            []);
        var durations = ProtobufBodies.DecodeMessage(new Proto().Msg(1, new Proto().Int(1, 3_723_500_000_000)).Msg(2, new Proto()).ToArray(), timing, "Timing");

        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"name":"x","creationTimestamp":"2023-11-14T22:13:20Z"}"""), meta), meta.ToJsonString());
        Assert.Equal("AAEC/w==", (string?)secret["data"]!["blob"]);
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"name":"settings","key":"mode","optional":false}"""), keyRef), keyRef.ToJsonString());
        Assert.True(JsonNode.DeepEquals(JsonNode.Parse("""{"every":"1h2m3.5s"}"""), durations), durations.ToJsonString());
    }

    [Theory]
    [InlineData(0L, "0s")]
    [InlineData(1L, "1ns")]
    [InlineData(1_500L, "1.5µs")]
    [InlineData(1_500_000L, "1.5ms")]
    [InlineData(90_000_000_000L, "1m30s")]
    [InlineData(3_600_000_000_000L, "1h0m0s")]
    [InlineData(-2_000_000_000L, "-2s")]
    public void Does_format_durations_as_go_does(long nanoseconds, string expected) =>
        Assert.Equal(expected, ProtobufBodies.GoDuration(nanoseconds));

    [Fact]
    public void Does_answer_400_at_every_truncation_of_a_body()
    {
        var body = SampleDeployment();
        var failures = 0;
        for (var length = 0; length < body.Length; length++)
        {
            var cut = body[..length];
            try
            {
                ProtobufBodies.Decode(cut);
            }
            catch (ApiException ex)
            {
                Assert.True(ex.Code == 400, $"length {length}: {ex.Code} {ex.Message}");
                failures++;
            }
        }

        var error = Assert.Throws<ApiException>(() => ProtobufBodies.Decode(body[..(body.Length - 3)]));
        Assert.Equal(400, error.Code);
        Assert.StartsWith("the protobuf body is malformed in ", error.Message, StringComparison.Ordinal);
        Assert.Contains("truncated", error.Message, StringComparison.Ordinal);
        Assert.True(failures > body.Length * 9 / 10, $"only {failures} of {body.Length} prefixes were refused");
    }

    [Fact]
    public void Does_answer_only_400_or_415_to_corrupted_bodies()
    {
        var body = SampleDeployment();
        var random = new Random(20261122);
        for (var round = 0; round < 2_000; round++)
        {
            var corrupted = (byte[])body.Clone();
            for (var flips = random.Next(1, 4); flips > 0; flips--)
            {
                corrupted[random.Next(4, corrupted.Length)] = (byte)random.Next(256);
            }
            try
            {
                ProtobufBodies.Decode(corrupted);
            }
            catch (ApiException ex)
            {
                Assert.True(ex.Code is 400 or 415, $"round {round}: {ex.Code} {ex.Message}");
            }
        }
    }

    [Fact]
    public void Does_name_the_field_when_its_wire_type_is_wrong()
    {
        var body = Proto.Envelope("apps/v1", "Deployment", new Proto().Msg(2, new Proto().Str(1, "three")));

        var error = Assert.Throws<ApiException>(() => ProtobufBodies.Decode(body));

        Assert.Equal(400, error.Code);
        Assert.Equal("the protobuf body is malformed in apps/v1 Deployment spec.replicas: field 1 has wire type 2, which cannot hold an int32 (varint, wire type 0)", error.Message);
    }

    [Theory]
    [InlineData("apps/v1", "StatefulSet")]
    [InlineData("apps/v1beta1", "Deployment")]
    public void Does_answer_415_naming_a_kind_without_a_schema(string apiVersion, string kind)
    {
        var error = Assert.Throws<ApiException>(() => ProtobufBodies.Decode(Proto.Envelope(apiVersion, kind, new Proto().Msg(1, new Proto().Str(1, "x")))));

        Assert.Equal(415, error.Code);
        Assert.StartsWith($"the embedded API server cannot read a protobuf {kind} ({apiVersion}) body; it reads protobuf only for Namespace, ", error.Message, StringComparison.Ordinal);
        Assert.EndsWith("run `kubectl apply -f <file>`.", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Does_answer_400_without_the_envelope_magic_or_kind()
    {
        Assert.Equal(400, Assert.Throws<ApiException>(() => ProtobufBodies.Decode("{\"kind\":\"Pod\"}"u8.ToArray())).Code);
        var noKind = Assert.Throws<ApiException>(() => ProtobufBodies.Decode((byte[])[.. "k8s\0"u8, .. new Proto().Bytes(2, []).ToArray()]));
        Assert.Equal("the protobuf body is malformed in the runtime.Unknown envelope: typeMeta.kind is empty, so the object's kind is unknown", noKind.Message);
    }

    [Fact]
    public void Does_cover_every_kind_kubectl_create_sends()
    {
        var roots = KubernetesProtoSchemas.Default.RootNames;

        foreach (var root in new[]
        {
            "apps/v1 Deployment", "batch/v1 Job", "batch/v1 CronJob", "v1 Service", "v1 ServiceAccount", "v1 ResourceQuota",
            "v1 Namespace", "v1 ConfigMap", "v1 Secret", "rbac.authorization.k8s.io/v1 Role", "rbac.authorization.k8s.io/v1 RoleBinding",
            "rbac.authorization.k8s.io/v1 ClusterRole", "rbac.authorization.k8s.io/v1 ClusterRoleBinding", "policy/v1 PodDisruptionBudget",
            "scheduling.k8s.io/v1 PriorityClass", "autoscaling/v2 HorizontalPodAutoscaler", "* DeleteOptions",
        })
        {
            Assert.Contains(root, roots);
        }
    }

    [Fact]
    public async Task Does_answer_a_truncated_body_over_http_with_a_400_status()
    {
        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        using var http = new HttpClient { BaseAddress = server.Url };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.Token);
        var body = SampleDeployment();

        using var truncated = await PostAsync(http, "/apis/apps/v1/namespaces/default/deployments", body[..^5]);
        using var created = await PostAsync(http, "/apis/apps/v1/namespaces/default/deployments", body);

        Assert.Equal(HttpStatusCode.BadRequest, truncated.StatusCode);
        var status = JsonNode.Parse(await truncated.Content.ReadAsStringAsync())!;
        Assert.Equal("BadRequest", (string?)status["reason"]);
        Assert.Contains("truncated", (string?)status["message"], StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(3, (int)server.Api.Get(BuiltinResources.Deployments, "default", "web")["spec"]!["replicas"]!);
    }

    [Fact]
    public async Task Does_answer_a_kind_without_a_schema_over_http_with_a_415_status()
    {
        await using var server = await LocalClusterServer.StartAsync(new LocalClusterOptions { Https = false });
        using var http = new HttpClient { BaseAddress = server.Url };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", server.Token);
        var body = Proto.Envelope("apps/v1", "StatefulSet", new Proto().Msg(1, new Proto().Str(1, "db")));

        using var response = await PostAsync(http, "/apis/apps/v1/namespaces/default/statefulsets", body);

        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
        var status = JsonNode.Parse(await response.Content.ReadAsStringAsync())!;
        Assert.Equal("UnsupportedMediaType", (string?)status["reason"]);
        Assert.Contains("cannot read a protobuf StatefulSet (apps/v1) body", (string?)status["message"], StringComparison.Ordinal);
        Assert.Contains("kubectl apply -f", (string?)status["message"], StringComparison.Ordinal);
    }

    private static async Task<HttpResponseMessage> PostAsync(HttpClient http, string path, byte[] body)
    {
        using var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/vnd.kubernetes.protobuf");
        return await http.PostAsync(new Uri(path, UriKind.Relative), content);
    }

    private static byte[] SampleDeployment()
    {
        var container = new Proto().Str(1, "web").Str(2, "nginx").Msg(6, new Proto().Int(3, 80)).Strs(3, "sh", "-c", "echo hi")
            .Msg(7, new Proto().Str(1, "MODE").Msg(3, new Proto().Msg(4, new Proto().Msg(1, new Proto().Str(1, "creds")).Str(2, "token"))));
        return Proto.Envelope("apps/v1", "Deployment", new Proto()
            .Msg(1, new Proto().Str(1, "web").Entry(11, "app", "web"))
            .Msg(2, new Proto().Int(1, 3).Msg(2, new Proto().Entry(1, "app", "web"))
                .Msg(3, new Proto().Msg(1, new Proto().Entry(11, "app", "web")).Msg(2, new Proto().Msg(2, container)))));
    }

    /// <summary>Builds protobuf bytes field by field.</summary>
    [Fact]
    public void Does_answer_every_mutated_protobuf_body_with_an_object_or_a_named_api_error()
    {
        var container = new Proto().Str(1, "web").Str(2, "nginx:1.27")
            .Msg(8, new Proto().Entry(1, "cpu", new Proto().Str(1, "500m")));
        var body = Proto.Envelope("apps/v1", "Deployment", new Proto()
            .Msg(1, new Proto().Str(1, "web").Str(3, "prod").Entry(11, "app", "web"))
            .Msg(2, new Proto().Int(1, 300).Msg(3, new Proto().Msg(2, new Proto().Msg(2, container))))
            .Msg(3, new Proto().Int(2, 7)));
        var run = Lowbit.Testing.Fuzzer.Run(body, 23, input => ProtobufBodies.Decode(input), ex => ex is ApiException);
        Assert.True(run >= 50);
    }

    private sealed class Proto
    {
        private readonly List<byte> _bytes = [];

        public static byte[] Envelope(string apiVersion, string kind, Proto raw) =>
            [.. "k8s\0"u8, .. new Proto().Msg(1, new Proto().Str(1, apiVersion).Str(2, kind)).Bytes(2, raw.ToArray()).ToArray()];

        public Proto Int(int field, long value) => Key(field, 0).Raw(unchecked((ulong)value));

        public Proto Str(int field, string value) => Bytes(field, Encoding.UTF8.GetBytes(value));

        public Proto Strs(int field, params string[] values) => values.Aggregate(this, (p, v) => p.Str(field, v));

        public Proto Msg(int field, Proto message) => Bytes(field, message.ToArray());

        public Proto Entry(int field, string key, string value) => Msg(field, new Proto().Str(1, key).Str(2, value));

        public Proto Entry(int field, string key, byte[] value) => Msg(field, new Proto().Str(1, key).Bytes(2, value));

        public Proto Entry(int field, string key, Proto value) => Msg(field, new Proto().Str(1, key).Msg(2, value));

        public Proto Bytes(int field, byte[] value)
        {
            Key(field, 2).Raw((ulong)value.Length);
            _bytes.AddRange(value);
            return this;
        }

        public Proto Fixed32(int field, uint value)
        {
            Key(field, 5);
            _bytes.AddRange(BitConverter.GetBytes(value));
            return this;
        }

        public Proto Fixed64(int field, ulong value)
        {
            Key(field, 1);
            _bytes.AddRange(BitConverter.GetBytes(value));
            return this;
        }

        public Proto Raw(ulong varint)
        {
            do
            {
                var b = (byte)(varint & 0x7f);
                varint >>= 7;
                _bytes.Add(varint == 0 ? b : (byte)(b | 0x80));
            }
            while (varint != 0);
            return this;
        }

        public byte[] ToArray() => [.. _bytes];

        private Proto Key(int field, int wireType) => Raw(((ulong)field << 3) | (uint)wireType);
    }
}
