//! Tests of the TLS layer through [`TlsSetup`]: real loopback handshakes with
//! a tokio-rustls client (SNI certificate selection, protocol versions,
//! ALPN, channel-binding data on both ends) and self-signed certificate
//! management across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ProtocolVersion;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::certstore::read_pem_file;
use super::selfsigned::test_support::cert_pem;
use super::*;

/// Protocol versions of a TLS 1.2-only client.
const TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

/// What both ends saw of one handshake.
#[derive(Debug)]
struct Outcome {
    served_leaf: CertificateDer<'static>,
    version: Option<ProtocolVersion>,
    server_alpn: Option<Vec<u8>>,
    server_sni: Option<String>,
    server_exporter: Option<Vec<u8>>,
    client_exporter: Option<Vec<u8>>,
    end_point: Option<Vec<u8>>,
    suite: Option<rustls::CipherSuite>,
}

/// Options of the test client.
struct Client<'a> {
    trust: Vec<PathBuf>,
    name: &'a str,
    sni: bool,
    versions: &'a [&'static rustls::SupportedProtocolVersion],
    alpn: &'a [&'a [u8]],
    /// The crypto provider (cipher suites in its order), Rookery's by default.
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl<'a> Client<'a> {
    fn new(trust: &[&Path], name: &'a str) -> Self {
        Client {
            trust: trust.iter().map(|p| p.to_path_buf()).collect(),
            name,
            sni: true,
            versions: rustls::ALL_VERSIONS,
            alpn: &[],
            provider: provider(),
        }
    }

    fn config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for path in &self.trust {
            for cert in read_pem_file(path).expect("trusted file").certs {
                roots.add(cert).expect("trust anchor");
            }
        }
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.versions)
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.enable_sni = self.sni;
        config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

/// Run one handshake between `setup` (acceptor with `alpn`) and `client`.
async fn handshake(
    setup: &Arc<TlsSetup>,
    alpn: &[&[u8]],
    client: &Client<'_>,
) -> Result<Outcome, String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = setup.acceptor(alpn);
    let server_setup = Arc::clone(setup);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
        let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
        let conn = tls.get_ref().1;
        Ok::<_, String>((
            conn.alpn_protocol().map(<[u8]>::to_vec),
            conn.server_name().map(str::to_string),
            tls_exporter(conn),
            server_setup.server_end_point(conn),
        ))
    });
    let connector = tokio_rustls::TlsConnector::from(client.config());
    let name = ServerName::try_from(client.name.to_string()).expect("name");
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let client_result = connector.connect(name, tcp).await;
    let server_result = server.await.expect("server task");
    let tls = client_result.map_err(|e| format!("client: {e}"))?;
    let (server_alpn, server_sni, server_exporter, end_point) =
        server_result.map_err(|e| format!("server: {e}"))?;
    let conn = tls.get_ref().1;
    let version = conn.protocol_version();
    let client_exporter = conn
        .export_keying_material(vec![0u8; 32], b"EXPORTER-Channel-Binding", Some(&[]))
        .ok();
    let served_leaf = conn.peer_certificates().expect("server certificate")[0].clone();
    let suite = conn.negotiated_cipher_suite().map(|s| s.suite());
    Ok(Outcome {
        suite,
        served_leaf,
        version,
        server_alpn,
        server_sni,
        server_exporter,
        client_exporter,
        end_point,
    })
}

fn leaf_of(path: &Path) -> CertificateDer<'static> {
    read_pem_file(path).expect("read").certs[0].clone()
}

fn hosts(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn sni_selects_the_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.pem");
    let b = dir.path().join("b.pem");
    generate_self_signed(&hosts(&["a.example"]), &a).expect("gencert a");
    generate_self_signed(&hosts(&["b.example"]), &b).expect("gencert b");
    let data = dir.path().join("data");
    let (setup, warnings) = TlsSetup::load(
        &[a.clone(), b.clone()],
        &hosts(&["a.example", "b.example"]),
        &data,
    )
    .expect("load");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(!data.join("certs").exists(), "nothing generated");
    assert_eq!(
        setup.certificate_hosts(),
        ["*.a.example", "*.b.example", "a.example", "b.example"]
    );

    let trust = [a.as_path(), b.as_path()];
    let out = handshake(&setup, &[], &Client::new(&trust, "a.example"))
        .await
        .expect("a");
    assert_eq!(out.served_leaf, leaf_of(&a));
    assert_eq!(out.server_sni.as_deref(), Some("a.example"));
    let out = handshake(&setup, &[], &Client::new(&trust, "b.example"))
        .await
        .expect("b");
    assert_eq!(out.served_leaf, leaf_of(&b));
    let out = handshake(&setup, &[], &Client::new(&trust, "conf.b.example"))
        .await
        .expect("wildcard");
    assert_eq!(out.served_leaf, leaf_of(&b));

    // No SNI: the first served host's certificate.
    let mut client = Client::new(&trust, "a.example");
    client.sni = false;
    let out = handshake(&setup, &[], &client).await.expect("no sni");
    assert_eq!(out.served_leaf, leaf_of(&a));
    assert_eq!(out.server_sni, None);
    assert_eq!(out.end_point, Some(Sha256::digest(leaf_of(&a)).to_vec()));

    let (setup, _) = TlsSetup::load(
        &[a.clone(), b.clone()],
        &hosts(&["b.example", "a.example"]),
        &data,
    )
    .expect("load");
    let mut client = Client::new(&trust, "b.example");
    client.sni = false;
    let out = handshake(&setup, &[], &client).await.expect("no sni");
    assert_eq!(out.served_leaf, leaf_of(&b));
}

#[tokio::test]
async fn versions_and_channel_bindings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, warnings) = TlsSetup::load(&[], &hosts(&["x.example"]), dir.path()).expect("load");
    assert_eq!(warnings.len(), 1);
    let file = dir.path().join("certs/x.example.pem");
    let leaf = leaf_of(&file);

    let out = handshake(&setup, &[], &Client::new(&[&file], "x.example"))
        .await
        .expect("tls 1.3");
    assert_eq!(out.version, Some(ProtocolVersion::TLSv1_3));
    let exporter = out.server_exporter.expect("tls-exporter on TLS 1.3");
    assert_eq!(exporter.len(), 32);
    assert_eq!(Some(exporter), out.client_exporter, "both ends agree");
    assert_eq!(out.end_point, Some(Sha256::digest(&leaf).to_vec()));

    let mut client = Client::new(&[&file], "x.example");
    client.versions = TLS12_ONLY;
    let out = handshake(&setup, &[], &client).await.expect("tls 1.2");
    assert_eq!(out.version, Some(ProtocolVersion::TLSv1_2));
    assert_eq!(out.server_exporter, None, "no tls-exporter on TLS 1.2");
    assert_eq!(out.end_point, Some(Sha256::digest(&leaf).to_vec()));
}

/// A ClientHello whose highest version is TLS 1.1 (no supported_versions
/// extension), with the signature_algorithms extension rustls needs before
/// looking at versions.
fn tls11_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend([0x42; 32]); // random
    body.push(0); // session id
    body.extend([0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // cipher suites
    body.extend([0x01, 0x00]); // compression: null
                               // extensions: signature_algorithms [ecdsa_secp256r1_sha256, rsa_pkcs1_sha256]
    body.extend([
        0x00, 0x0a, 0x00, 0x0d, 0x00, 0x06, 0x00, 0x04, 0x04, 0x03, 0x04, 0x01,
    ]);
    let mut handshake = vec![0x01, 0x00];
    handshake.extend(u16::try_from(body.len()).expect("len").to_be_bytes());
    handshake.extend(body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend(u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend(handshake);
    record
}

#[tokio::test]
async fn the_server_chooses_aes_128_gcm_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, _) = TlsSetup::load(&[], &hosts(&["x.example"]), dir.path()).expect("load");
    let file = dir.path().join("certs/x.example.pem");
    for versions in [rustls::ALL_VERSIONS, TLS12_ONLY] {
        // rustls's own client order puts AES-256-GCM first.
        let mut client = Client::new(&[&file], "x.example");
        client.provider = Arc::new(rustls::crypto::ring::default_provider());
        client.versions = versions;
        assert_eq!(
            client.provider.cipher_suites[0].suite(),
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
        let out = handshake(&setup, &[], &client).await.expect("handshake");
        let want = if out.version == Some(ProtocolVersion::TLSv1_3) {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        } else {
            rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        };
        assert_eq!(out.suite, Some(want), "{versions:?}");
    }
}

#[tokio::test]
async fn tls11_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, _) = TlsSetup::load(&[], &hosts(&["x.example"]), dir.path()).expect("load");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = setup.acceptor(&[]);
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        acceptor.accept(tcp).await.map(|_| ())
    });
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(&tls11_client_hello()).await.expect("send");
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.expect("read");
    assert!(server.await.expect("task").is_err(), "handshake must fail");
    // Fatal alert record: type 21, level 2, description 70 (protocol_version).
    assert_eq!(reply.first(), Some(&0x15), "{reply:?}");
    assert_eq!(reply.get(5..7), Some(&[2u8, 70][..]), "{reply:?}");
}

#[tokio::test]
async fn alpn_semantics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, _) = TlsSetup::load(&[], &hosts(&["x.example"]), dir.path()).expect("load");
    let file = dir.path().join("certs/x.example.pem");
    let alpn: &[&[u8]] = &[b"xmpp-client"];

    let mut client = Client::new(&[&file], "x.example");
    client.alpn = &[b"h2", b"xmpp-client"];
    let out = handshake(&setup, alpn, &client)
        .await
        .expect("matching alpn");
    assert_eq!(out.server_alpn.as_deref(), Some(&b"xmpp-client"[..]));

    let client = Client::new(&[&file], "x.example");
    let out = handshake(&setup, alpn, &client)
        .await
        .expect("no alpn offered");
    assert_eq!(out.server_alpn, None);

    let mut client = Client::new(&[&file], "x.example");
    client.alpn = &[b"h2"];
    let err = handshake(&setup, alpn, &client)
        .await
        .expect_err("no common protocol");
    assert!(
        err.contains("NoApplicationProtocol") || err.contains("application protocol"),
        "{err}"
    );
}

#[tokio::test]
async fn self_signed_generated_once_and_reused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (setup, warnings) =
        TlsSetup::load(&[], &hosts(&["Self.Example"]), dir.path()).expect("load");
    let file = dir.path().join("certs/self.example.pem");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("self-signed"), "{warnings:?}");
    assert!(warnings[0].contains("self.example"), "{warnings:?}");
    assert!(
        warnings[0].contains(&file.display().to_string()),
        "{warnings:?}"
    );
    assert_eq!(
        setup.certificate_hosts(),
        ["*.self.example", "self.example"]
    );
    let infos = setup.certificates();
    assert_eq!(infos.len(), 1);
    assert!(infos[0].generated && infos[0].server_auth && infos[0].client_auth);
    let first = std::fs::read(&file).expect("generated file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let (setup, warnings) =
        TlsSetup::load(&[], &hosts(&["self.example"]), dir.path()).expect("reload");
    assert_eq!(warnings.len(), 1, "still warned about");
    assert_eq!(std::fs::read(&file).expect("file"), first, "reused as is");
    let out = handshake(&setup, &[], &Client::new(&[&file], "self.example"))
        .await
        .expect("handshake");
    assert_eq!(out.served_leaf, leaf_of(&file));

    // Other names in the file: regenerated.
    std::fs::write(&file, cert_pem(&["other.example"], -1, 300)).expect("write");
    let (setup, _) = TlsSetup::load(&[], &hosts(&["self.example"]), dir.path()).expect("regen");
    assert_ne!(std::fs::read(&file).expect("file"), first);
    assert_eq!(
        setup.certificate_hosts(),
        ["*.self.example", "self.example"]
    );

    // Expired: regenerated.
    std::fs::write(
        &file,
        cert_pem(&["self.example", "*.self.example"], -400, -1),
    )
    .expect("write");
    let (setup, _) = TlsSetup::load(&[], &hosts(&["self.example"]), dir.path()).expect("regen");
    let info = &setup.certificates()[0];
    assert!(info.not_after > super::certstore::now_secs() + 300 * 86_400);
    let out = handshake(&setup, &[], &Client::new(&[&file], "self.example"))
        .await
        .expect("handshake with regenerated");
    assert_eq!(out.served_leaf, leaf_of(&file));
}

#[test]
fn load_reports_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expired = dir.path().join("expired.pem");
    std::fs::write(&expired, cert_pem(&["old.example"], -400, -2)).expect("write");
    let (setup, warnings) = TlsSetup::load(
        std::slice::from_ref(&expired),
        &hosts(&["old.example"]),
        dir.path(),
    )
    .expect("load");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("expired") && warnings[0].contains("expired.pem"));
    assert_eq!(
        setup.certificate_hosts(),
        ["old.example"],
        "loaded, not replaced"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let err = TlsSetup::load(
        std::slice::from_ref(&garbage),
        &hosts(&["x.example"]),
        dir.path(),
    )
    .expect_err("garbage");
    assert_eq!(err.path(), Some(garbage.as_path()));
    assert!(
        err.to_string().starts_with(&garbage.display().to_string()),
        "{err}"
    );

    let pattern = dir.path().join("none-*.pem");
    let (_, warnings) =
        TlsSetup::load(&[pattern], &hosts(&["x.example"]), dir.path()).expect("load");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].contains("matches no file"));

    let (setup, warnings) = TlsSetup::load(&[], &[], dir.path()).expect("nothing");
    assert!(setup.certificate_hosts().is_empty());
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("handshakes will fail"));

    let err = TlsSetup::load(&[], &hosts(&["../evil"]), dir.path()).expect_err("bad host");
    assert!(err.to_string().contains("../evil"), "{err}");
}
