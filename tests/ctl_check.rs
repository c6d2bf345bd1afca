//! `rookery ctl check` and `rookery ctl cert_import` against the real
//! binary: certbot's layout imported into a running server (used for new
//! TLS connections at once, sessions kept), refused imports, and the
//! certificate findings of `check`.

use crate::common;

use std::path::Path;

use common::*;

/// root CA → intermediate CA → leaf for `name`: (leaf PEM, key PEM, intermediate PEM, leaf DER).
fn ca_chain(name: &str) -> (String, String, String, Vec<u8>) {
    let ca_params = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params
    };
    let root_key = rcgen::KeyPair::generate().expect("key");
    let root_params = ca_params("Test Root");
    let root_issuer = rcgen::Issuer::from_params(&root_params, &root_key);
    let mid_key = rcgen::KeyPair::generate().expect("key");
    let mid_params = ca_params("Test Intermediate");
    let mid = mid_params.signed_by(&mid_key, &root_issuer).expect("mid");
    let mid_issuer = rcgen::Issuer::from_params(&mid_params, &mid_key);
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .signed_by(&leaf_key, &mid_issuer)
        .expect("leaf");
    (
        leaf.pem(),
        leaf_key.serialize_pem(),
        mid.pem(),
        leaf.der().to_vec(),
    )
}

fn certbot_dir(root: &Path, domain: &str, fullchain: &str, key: &str) {
    let d = root.join("live").join(domain);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("fullchain.pem"), fullchain).unwrap();
    std::fs::write(d.join("privkey.pem"), key).unwrap();
}

#[tokio::test]
async fn cert_import_reloads_a_running_server_and_check_reports() {
    let server = server_with_users();
    // Before: the host has only the generated self-signed certificate.
    let (c, out, err) = server.ctl(&["check", "certs"]);
    assert_eq!(c, 1, "{out}{err}");
    assert!(
        err.contains("PROBLEM") && err.contains("localhost: no certificate"),
        "{err}"
    );

    let mut alice = Client::login(&server, "alice", "secret", Some("kept")).await;
    let (leaf, key, mid, leaf_der) = ca_chain("localhost");
    let src = tempfile::tempdir().unwrap();
    certbot_dir(src.path(), "localhost", &format!("{leaf}{mid}"), &key);
    let (other_leaf, other_key, other_mid, _) = ca_chain("other.example");
    certbot_dir(
        src.path(),
        "other.example",
        &format!("{other_leaf}{other_mid}"),
        &other_key,
    );
    let live = src.path().join("live").display().to_string();
    let out = server.ctl_ok(&["cert_import", &live]);
    assert!(out.contains("localhost: imported"), "{out}");
    assert!(
        out.contains("other.example is not a served host; skipped"),
        "{out}"
    );
    assert!(
        out.contains("The running server reloaded its certificates"),
        "{out}"
    );

    // New TLS connections get the imported chain; the old session stays.
    let c = Client::connect_starttls(server.c2s()).await;
    let tls = c.tls.as_ref().expect("tls");
    assert_eq!(
        tls.peer_certs.first(),
        Some(&leaf_der),
        "imported leaf not served"
    );
    assert_eq!(tls.peer_certs.len(), 2, "intermediate not sent");
    assert_eq!(alice.ping("localhost").await.attr("type"), Some("result"));

    let (c, out, err) = server.ctl(&["check", "certs"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(
        out.contains("localhost: certificate") && out.contains("valid for"),
        "{out}"
    );
    // The MUC service domain federates like a host: a warning (not a
    // problem) when no certificate names it.
    assert!(
        out.contains(
            "warning  conference.localhost: no certificate in certfiles names this service domain"
        ),
        "{out}"
    );
    let (c, out, _) = server.ctl(&["check", "dns"]);
    assert_eq!(c, 0);
    assert!(out.contains("localhost: not a public DNS name"), "{out}");

    // Leaf only (certbot's cert.pem as fullchain): imported, but check says so.
    let src2 = tempfile::tempdir().unwrap();
    let (leaf2, key2, _, _) = ca_chain("localhost");
    certbot_dir(src2.path(), "localhost", &leaf2, &key2);
    server.ctl_ok(&[
        "cert_import",
        &src2.path().join("live/localhost").display().to_string(),
    ]);
    let (c, _, err) = server.ctl(&["check", "certs"]);
    assert_eq!(c, 1);
    assert!(err.contains("fullchain.pem"), "{err}");

    // A key that does not match: refused, the previous file stays.
    let src3 = tempfile::tempdir().unwrap();
    certbot_dir(src3.path(), "localhost", &format!("{leaf}{mid}"), &key2);
    let (c, _, err) = server.ctl(&[
        "cert_import",
        &src3.path().join("live").display().to_string(),
    ]);
    assert_eq!(c, 1, "{err}");
    assert!(err.contains("localhost: not imported"), "{err}");
    let (c, _, err) = server.ctl(&["cert_import", "/nonexistent/dir"]);
    assert_eq!(c, 1, "{err}");
    let (c, _, _) = server.ctl(&["cert_import"]);
    assert_eq!(c, 2);
    let (c, _, _) = server.ctl(&["check", "everything"]);
    assert_eq!(c, 2);
}

#[test]
fn check_config_section_and_stopped_server() {
    let mut server = Server::start_with_yaml_edit(Config::default(), |y| {
        y.replace("modules:\n", "modules:\n  mod_mqtt: {}\n")
    });
    let st = server.stop();
    assert!(st.success());
    let (c, out, err) = server.ctl(&["check", "config"]);
    assert_eq!(c, 0, "{out}{err}");
    assert!(out.contains("is valid"), "{out}");
    assert!(out.contains("warning") && out.contains("mod_mqtt"), "{out}");
    let out = server.ctl_ok(&["check", "--help"]);
    assert!(out.starts_with("Usage: rookery ctl check [WHAT]"), "{out}");
}

/// Certificate files that change on disk (a renewal) are picked up without
/// a command and without dropping sessions. The check interval is shortened
/// through `ROOKERY_CERT_CHECK_SECS` (inherited by the server process).
#[tokio::test]
async fn changed_certificate_files_are_reloaded() {
    std::env::set_var("ROOKERY_CERT_CHECK_SECS", "1");
    let server = server_with_users();
    let mut alice = Client::login(&server, "alice", "secret", Some("kept")).await;
    let dir = server.dir().join("data").join("imported-certs");
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..2 {
        let (leaf, key, mid, leaf_der) = ca_chain("localhost");
        std::fs::write(dir.join("localhost.pem"), format!("{leaf}{mid}{key}")).unwrap();
        let mut served = false;
        for _ in 0..40 {
            let c = Client::connect_starttls(server.c2s()).await;
            if c.tls.as_ref().and_then(|t| t.peer_certs.first()) == Some(&leaf_der) {
                served = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
        assert!(
            served,
            "round {round}: the changed certificate was not picked up"
        );
    }
    assert_eq!(alice.ping("localhost").await.attr("type"), Some("result"));
}
