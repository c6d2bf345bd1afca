//! `rookery ctl cert_import DIR...`: take certificates from certbot's
//! layout (`live/<domain>/fullchain.pem` + `privkey.pem`) for the served
//! hosts and put them, certificate chain and key in one file, in
//! `data_dir/imported-certs/<domain>.pem` (mode 0600), which the server loads in
//! addition to `certfiles`. A DIR is either a `live/` directory (every
//! `<domain>/` under it is looked at) or one `<domain>/` directory. Each
//! file is checked (parses, its key matches, it names the domain) before it
//! replaces the previous one (written to a temporary file, then renamed).
//! A running server is then asked to reload its configuration, so the new
//! certificates are used without dropping sessions.

use std::path::{Path, PathBuf};

use crate::config::Config;

use super::commands::CtlOutput;

/// The `<domain>` directories to look at under `dir`.
fn domain_dirs(dir: &Path) -> Result<Vec<PathBuf>, String> {
    if dir.join("fullchain.pem").exists() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("fullchain.pem").exists())
        .collect();
    out.sort();
    Ok(out)
}

fn served(config: &Config, domain: &str) -> Option<String> {
    let d = domain.trim_end_matches('.').to_lowercase();
    config.hosts.iter().find(|h| **h == d).cloned()
}

/// Import; returns the report and the hosts imported.
pub fn import(config: &Config, dirs: &[String]) -> (CtlOutput, Vec<String>) {
    let mut lines = Vec::new();
    let mut imported = Vec::new();
    let mut failed = false;
    let target_dir = config.imported_certs_dir();
    for dir in dirs {
        let domains = match domain_dirs(Path::new(dir)) {
            Ok(d) => d,
            Err(e) => {
                lines.push(e);
                failed = true;
                continue;
            }
        };
        if domains.is_empty() {
            lines.push(format!(
                "{dir}: no <domain>/fullchain.pem found (expected certbot's live/ layout)"
            ));
            failed = true;
        }
        for d in domains {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            let Some(host) = served(config, &name) else {
                lines.push(format!(
                    "{}: {name} is not a served host; skipped",
                    d.display()
                ));
                continue;
            };
            match import_one(&d, &host, &target_dir) {
                Ok(path) => {
                    lines.push(format!(
                        "{host}: imported {} into {}",
                        d.display(),
                        path.display()
                    ));
                    imported.push(host);
                }
                Err(e) => {
                    lines.push(format!("{host}: not imported: {e}"));
                    failed = true;
                }
            }
        }
    }
    if imported.is_empty() && !failed {
        lines.push("no certificate for a served host was found".into());
        failed = true;
    }
    let text = lines.join("\n");
    (
        if failed {
            CtlOutput::failed(text)
        } else {
            CtlOutput::ok(text)
        },
        imported,
    )
}

fn import_one(src: &Path, host: &str, target_dir: &Path) -> Result<PathBuf, String> {
    let read = |name: &str| {
        std::fs::read_to_string(src.join(name))
            .map_err(|e| format!("cannot read {}: {e}", src.join(name).display()))
    };
    let chain = read("fullchain.pem")?;
    let key = read("privkey.pem")?;
    let mut pem = chain.trim_end().to_string();
    pem.push('\n');
    pem.push_str(key.trim_end());
    pem.push('\n');
    std::fs::create_dir_all(target_dir)
        .map_err(|e| format!("cannot create {}: {e}", target_dir.display()))?;
    let dest = target_dir.join(format!("{host}.pem"));
    let tmp = target_dir.join(format!(".{host}.pem.tmp"));
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(pem.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    // The new file alone must give this host a certificate.
    let checked = crate::tls::inspect(std::slice::from_ref(&tmp), &[host.to_string()]);
    let ok =
        matches!(&checked, Ok((per_host, _)) if per_host.first().is_some_and(|(_, c)| c.is_some()));
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return Err(match checked {
            Err(e) => e.to_string(),
            Ok((_, warnings)) => format!(
                "the certificate does not name {host} or does not match the key{}",
                if warnings.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", warnings.join("; "))
                }
            ),
        });
    }
    std::fs::rename(&tmp, &dest)
        .map_err(|e| format!("cannot rename to {}: {e}", dest.display()))?;
    Ok(dest)
}
