using Lowbit.Planner;
using Microsoft.Extensions.Options;

namespace Lowbit.Operator;

/// <summary>
/// Where the planner's GPU catalog and prices come from: configuration section <c>Operator:Catalog</c>. With
/// <see cref="File"/> empty the built-in <see cref="GpuCatalog.Default"/> applies; otherwise the file (the JSON the
/// Helm chart renders from its <c>catalog</c> values into a ConfigMap, <see cref="CatalogJson"/>'s shape) overrides
/// or replaces it. Read once at start; the chart rolls the Deployment when the ConfigMap changes.
/// </summary>
public sealed class CatalogOptions
{
    public const string Section = "Operator:Catalog";

    /// <summary>Path of a catalog JSON file (e.g. <c>/etc/lowbit/catalog/catalog.json</c>); empty: the built-in catalog.</summary>
    public string? File { get; set; }

    /// <summary>The catalog these options name; throws <see cref="PlanInputException"/> naming the field when the file is unusable.</summary>
    public GpuCatalog Load()
    {
        if (string.IsNullOrWhiteSpace(File))
        {
            return GpuCatalog.Default;
        }

        if (!System.IO.File.Exists(File))
        {
            throw new PlanInputException($"{Section}:File", $"'{File}' does not exist (the chart mounts the catalog ConfigMap there)");
        }

        return CatalogJson.Parse(System.IO.File.ReadAllText(File));
    }
}

/// <summary>Fails the start when the catalog file is missing or malformed, with the parser's message (it names the entry and field).</summary>
public sealed class CatalogOptionsValidator : IValidateOptions<CatalogOptions>
{
    public ValidateOptionsResult Validate(string? name, CatalogOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        try
        {
            _ = options.Load();
            return ValidateOptionsResult.Success;
        }
        catch (PlanInputException ex)
        {
            return ValidateOptionsResult.Fail($"{CatalogOptions.Section}:File ({options.File}): {ex.Message}");
        }
    }
}
