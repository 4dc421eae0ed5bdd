using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace Lowbit.LocalCluster.Security;

/// <summary>
/// A self-made certificate authority (ECDSA P-256) and a serving certificate for 127.0.0.1/localhost signed
/// by it. The CA is kept in the state directory (ca.crt, ca.key) so kubeconfigs stay valid across restarts.
/// </summary>
public sealed class ClusterCertificates : IDisposable
{
    private ClusterCertificates(X509Certificate2 ca, X509Certificate2 server)
    {
        Authority = ca;
        Server = server;
    }

    /// <summary>The CA certificate with its private key.</summary>
    public X509Certificate2 Authority { get; }

    /// <summary>The serving certificate with its private key.</summary>
    public X509Certificate2 Server { get; }

    /// <summary>The CA certificate as PEM (what <c>certificate-authority-data</c> carries, base64-encoded).</summary>
    public string AuthorityPem => Authority.ExportCertificatePem();

    /// <summary>Loads the CA from <paramref name="directory"/> (creating it there when missing; in memory when null) and issues a serving certificate.</summary>
    public static ClusterCertificates Create(string? directory, TimeProvider time)
    {
        var now = time.GetUtcNow();
        X509Certificate2 ca;
        var certPath = directory is null ? null : Path.Combine(directory, "ca.crt");
        var keyPath = directory is null ? null : Path.Combine(directory, "ca.key");
        if (certPath is not null && File.Exists(certPath) && File.Exists(keyPath))
        {
            ca = X509Certificate2.CreateFromPemFile(certPath, keyPath);
        }
        else
        {
            using var caKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var request = new CertificateRequest("CN=lowbit-local-ca", caKey, HashAlgorithmName.SHA256);
            request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
            request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.KeyCertSign | X509KeyUsageFlags.CrlSign | X509KeyUsageFlags.DigitalSignature, true));
            request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, false));
            ca = request.CreateSelfSigned(now.AddMinutes(-5), now.AddYears(10));
            if (certPath is not null)
            {
                Directory.CreateDirectory(directory!);
                File.WriteAllText(certPath, ca.ExportCertificatePem());
                File.WriteAllText(keyPath!, caKey.ExportPkcs8PrivateKeyPem());
                if (!OperatingSystem.IsWindows())
                {
                    File.SetUnixFileMode(keyPath!, UnixFileMode.UserRead | UnixFileMode.UserWrite);
                }
            }
        }
        using var serverKey = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var serverRequest = new CertificateRequest("CN=lowbit-local-apiserver", serverKey, HashAlgorithmName.SHA256);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        names.AddDnsName("kubernetes.default.svc");
        serverRequest.CertificateExtensions.Add(names.Build());
        serverRequest.CertificateExtensions.Add(new X509BasicConstraintsExtension(false, false, 0, true));
        serverRequest.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyAgreement, true));
        serverRequest.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], false));
        var serial = RandomNumberGenerator.GetBytes(16);
        serial[0] &= 0x7f;
        using var issued = serverRequest.Create(ca, now.AddMinutes(-5), now.AddYears(1), serial);
        using var withKey = issued.CopyWithPrivateKey(serverKey);
        var server = X509CertificateLoader.LoadPkcs12(withKey.Export(X509ContentType.Pkcs12), null);
        return new ClusterCertificates(ca, server);
    }

    public void Dispose()
    {
        Authority.Dispose();
        Server.Dispose();
    }
}
