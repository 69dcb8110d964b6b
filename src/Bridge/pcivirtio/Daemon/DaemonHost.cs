using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using PciVirtio.Host.Control;

namespace PciVirtio.Host.Daemon;

/// <summary>
/// Builds the daemon of <c>pcivirtio run</c> on Microsoft.Extensions.Hosting: configuration
/// (appsettings.json beside the program and in the working directory, the file of
/// <c>--config</c>, environment variables, <c>--Key=value</c> flags), logging with scopes,
/// metrics, the devices, the control socket, and systemd's notify protocol when started by
/// systemd.
/// </summary>
public static class DaemonHost
{
    /// <summary>Reads and checks the configuration; the settings, or every problem found
    /// (each naming its key).</summary>
    public static (DaemonSettings? Settings, IReadOnlyList<string> Errors, IConfiguration Configuration) LoadSettings(string? configFile, IReadOnlyList<string> overrides)
    {
        var builder = new ConfigurationBuilder();
        AddSources(builder, configFile, overrides);
        IConfigurationRoot configuration;
        try
        {
            configuration = builder.Build();
        }
        catch (Exception e) when (e is InvalidDataException or FormatException or IOException or System.Text.Json.JsonException)
        {
            return (null, [$"configuration: {e.Message}{(e.InnerException is { } inner ? $" ({inner.Message})" : "")}"], new ConfigurationBuilder().Build());
        }

        // Unknown keys are errors: a misspelt "Queus" silently ignored would run a device
        // the operator did not ask for. Named with their full key, as every other error, and
        // reported together with the other problems, so one round of fixes is enough.
        var errors = SettingsValidator.UnknownKeys(configuration.GetSection(DaemonSettings.Section));
        var settings = new DaemonSettings();
        try
        {
            // The binder's own unknown-key check stays as a backstop for anything the walk
            // above does not know (when the walk found some, they are reported already).
            configuration.GetSection(DaemonSettings.Section).Bind(settings, o => o.ErrorOnUnknownConfiguration = errors.Count == 0);
        }
        catch (InvalidOperationException e)
        {
            errors.Add($"configuration: {e.Message}");
            return (null, errors, configuration);
        }

        errors.AddRange(SettingsValidator.Validate(settings));
        return (errors.Count == 0 ? settings : null, errors, configuration);
    }

    /// <summary>The host for <paramref name="settings"/> (already checked), over the
    /// <paramref name="configuration"/> they were read from (<see cref="LoadSettings"/>), so
    /// logging and devices see the same reading of the files.</summary>
    public static IHost Build(DaemonSettings settings, IConfiguration configuration, Action<ILoggingBuilder>? logging = null)
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings
        {
            ApplicationName = "pcivirtio",
            ContentRootPath = AppContext.BaseDirectory,
        });
        builder.Configuration.AddConfiguration(configuration);

        // A device that cannot start is reported by 'run' in one line that says which and why;
        // the host's own report of the same failure is a stack trace. (Configuration may
        // raise the level again.)
        builder.Logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
        if (logging is null)
        {
            // Defaults first, so Logging:Console:FormatterOptions in the configuration wins;
            // Logging:Console:FormatterName picks simple (default), json or systemd (what
            // AddSystemd chooses under systemd: the journal stamps each line itself).
            // Without a formatter name the console logger falls back to its old options and
            // ignores the formatter's; name it, and let the configuration rename it.
            builder.Services.Configure<ConsoleLoggerOptions>(o => o.FormatterName = ConsoleFormatterNames.Simple);
            builder.Services.Configure<SimpleConsoleFormatterOptions>(o =>
            {
                o.IncludeScopes = true;
                o.SingleLine = true;
                o.TimestampFormat = "HH:mm:ss.fff ";
            });
            builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
            builder.Logging.AddConsole();
        }
        else
        {
            builder.Logging.AddConfiguration(builder.Configuration.GetSection("Logging"));
            logging(builder.Logging);
        }

        builder.Services.AddMetrics();
        builder.Services.AddSystemd();

        // Under systemd, AddSystemd picks the systemd formatter; a formatter the operator
        // named in the configuration (json for a log shipper) still wins.
        if (builder.Configuration["Logging:Console:FormatterName"] is { Length: > 0 } formatter)
        {
            builder.Services.PostConfigure<ConsoleLoggerOptions>(o => o.FormatterName = formatter);
        }
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(settings.ShutdownSeconds));
        builder.Services.AddSingleton(settings);
        builder.Services.AddSingleton<RunningDevices>();
        builder.Services.AddSingleton<PciVirtioMetrics>();

        // The control socket first: the host does not stop the services that started when a
        // later one fails, so the devices, which roll themselves back, start last. (A control
        // socket another daemon holds then fails the start before any device is up.)
        if (settings.ResolvedControlSocket is { Length: > 0 } control)
        {
            builder.Services.AddHostedService(sp => new ControlServer(control, sp.GetRequiredService<RunningDevices>(), sp.GetRequiredService<ILogger<ControlServer>>()));
        }

        builder.Services.AddHostedService<DevicesService>();

        var host = builder.Build();

        // Observable instruments exist once the metrics object does.
        _ = host.Services.GetRequiredService<PciVirtioMetrics>();
        return host;
    }

    private static void AddSources(IConfigurationBuilder builder, string? configFile, IReadOnlyList<string> overrides)
    {
        builder.AddJsonFile(Path.Combine(AppContext.BaseDirectory, "appsettings.json"), optional: true, reloadOnChange: false);
        if (configFile is null)
        {
            builder.AddJsonFile(Path.GetFullPath("appsettings.json"), optional: true, reloadOnChange: false);
        }
        else
        {
            builder.AddJsonFile(Path.GetFullPath(configFile), optional: false, reloadOnChange: false);
        }

        // PciVirtio__Backends__0__Socket=… (and Logging__LogLevel__Default=…), as systemd
        // Environment= lines and containers give them.
        builder.AddEnvironmentVariables();
        builder.AddCommandLine([.. overrides]);
    }
}
