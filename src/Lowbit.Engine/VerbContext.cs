using Lowbit.Engine.Protocol;

namespace Lowbit.Engine;

/// <summary>What a verb handler gets besides its request.</summary>
public sealed record VerbContext(TextWriter Stdout, TextWriter Stderr, TimeProvider Time, long StartTimestamp)
{
    public double ElapsedSeconds => Time.GetElapsedTime(StartTimestamp).TotalSeconds;

    /// <summary>Writes one progress event line.</summary>
    public void Emit(EngineEvent engineEvent) => Stdout.WriteLine(engineEvent.ToJsonLine());

    public void Log(string message) => Emit(new LogEvent { Level = "info", Message = message });
}
