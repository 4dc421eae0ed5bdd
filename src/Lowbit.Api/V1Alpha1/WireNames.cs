using System.Collections.Concurrent;
using System.Reflection;
using System.Text.Json.Serialization;

namespace Lowbit.Api.V1Alpha1;

/// <summary>The spelling of enum values in manifests (<c>gguf-q8_0</c>, <c>qlora</c>), for engine arguments and messages.</summary>
public static class WireNames
{
    private static readonly ConcurrentDictionary<Type, IReadOnlyDictionary<string, string>> ByMember = new();

    /// <summary>The manifest spelling of <paramref name="value"/>.</summary>
    public static string Of<T>(T value)
        where T : struct, Enum =>
        Names(typeof(T))[value.ToString()];

    /// <summary>Parses the manifest spelling; null when <paramref name="text"/> is not one of <see cref="All{T}"/>.</summary>
    public static T? Parse<T>(string text)
        where T : struct, Enum
    {
        var member = Names(typeof(T)).FirstOrDefault(p => p.Value == text).Key;
        return member is null ? null : Enum.Parse<T>(member);
    }

    /// <summary>Every accepted spelling, in declaration order.</summary>
    public static IReadOnlyList<string> All<T>()
        where T : struct, Enum =>
        [.. Names(typeof(T)).Values];

    private static IReadOnlyDictionary<string, string> Names(Type type) => ByMember.GetOrAdd(type, t =>
        t.GetFields(BindingFlags.Public | BindingFlags.Static)
            .OrderBy(f => f.MetadataToken)
            .ToDictionary(f => f.Name, f => f.GetCustomAttribute<JsonStringEnumMemberNameAttribute>()?.Name ?? f.Name));
}
