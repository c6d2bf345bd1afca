//! Building the live snapshot ([`Live`]: configuration, certificates,
//! modules) at start-up, and replacing it: `rookery ctl reload_config`
//! re-reads the configuration file; the certificate watcher reloads the
//! certificates alone.
//!
//! Invariants: a reload either swaps in a complete new snapshot or changes
//! nothing (any error leaves the running one); what only a restart can
//! change (`listen`, `data_dir`, `ctl_socket`, `loglevel`) keeps its
//! running value in the new snapshot, with a warning; sessions are never
//! dropped by a reload.

use std::collections::HashMap;
use std::sync::Arc;

use xep_support::module::Module;

use crate::config::Config;
use crate::server::{Live, Server};
use crate::tls::s2s::S2sTls;
use crate::tls::TlsSetup;

/// Load certificates and build modules for `config`. Returns the warnings
/// to log (module and certificate notes).
pub fn build(config: Config) -> Result<(Live, Vec<String>), String> {
    let mut warnings = config.warnings.clone();
    let (tls, tls_warnings) = TlsSetup::load(
        &config.effective_certfiles(),
        &config.hosts,
        &config.data_dir,
    )
    .map_err(|e| e.to_string())?;
    warnings.extend(tls_warnings);
    let (s2s_tls, s2s_warnings) = S2sTls::new(tls.clone(), config.s2s.cafile.as_deref())?;
    warnings.extend(s2s_warnings);
    let globals = config.module_globals();
    let (modules, module_warnings) = xep_support::registry::build(&config.modules, &globals);
    for (module, message) in module_warnings {
        warnings.push(config.module_warning(&module, &message));
    }
    let mut iq_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
    let mut pre_auth_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
    let mut account_iq_handlers: HashMap<&'static str, Arc<dyn Module>> = HashMap::new();
    for m in &modules {
        for ns in m.server_iq_namespaces() {
            iq_handlers.insert(ns, m.clone());
        }
        for ns in m.pre_auth_iq_namespaces() {
            pre_auth_handlers.insert(ns, m.clone());
        }
        for ns in m.account_iq_namespaces() {
            account_iq_handlers.insert(ns, m.clone());
        }
    }
    // The core's own account iq (RFC 6121 rosters), in the same table.
    let roster: Arc<dyn Module> = Arc::new(crate::im::roster::RosterIq);
    for ns in roster.account_iq_namespaces() {
        account_iq_handlers.insert(ns, roster.clone());
    }
    let hooks = xep_support::hook_lists::HookLists::new(&modules);
    let mut services: HashMap<String, (Arc<dyn Module>, String)> = HashMap::new();
    for m in &modules {
        for (domain, host) in m.service_domains(&config.hosts) {
            let component = config
                .listen
                .iter()
                .any(|l| l.service_hosts.iter().any(|h| h.domain == domain));
            if config.hosts.contains(&domain) || component || services.contains_key(&domain) {
                warnings.push(config.module_warning(
                        m.name(),
                        &format!("service domain {domain} is already a served host, a component or another module's service; the module does not serve it"),
                    ));
                continue;
            }
            services.insert(domain, (m.clone(), host));
        }
    }
    fn typed<T: Clone + 'static>(modules: &[Arc<dyn Module>]) -> Option<T> {
        modules
            .iter()
            .find_map(|m| m.as_any().and_then(|a| a.downcast_ref::<T>()).cloned())
    }
    Ok((
        Live {
            starttls_acceptor: tls.acceptor(&[]),
            direct_tls_acceptor: tls.acceptor(&[b"xmpp-client"]),
            tls,
            s2s_tls: Arc::new(s2s_tls),
            config: Arc::new(config),
            sm: typed(&modules),
            csi: typed(&modules),
            fast: typed(&modules),
            ping: typed(&modules),
            modules,
            iq_handlers,
            pre_auth_handlers,
            account_iq_handlers,
            hooks,
            services,
        },
        warnings,
    ))
}

/// Load the certificates again (same configuration and modules) and
/// swap them in; on error the current ones stay.
pub fn reload_certificates(server: &Server) -> Result<(), String> {
    let old = server.live();
    let config = &old.config;
    let (tls, warnings) = TlsSetup::load(
        &config.effective_certfiles(),
        &config.hosts,
        &config.data_dir,
    )
    .map_err(|e| e.to_string())?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let s2s_tls = Arc::new(old.s2s_tls.with_setup(tls.clone())?);
    let live = Live {
        config: old.config.clone(),
        starttls_acceptor: tls.acceptor(&[]),
        direct_tls_acceptor: tls.acceptor(&[b"xmpp-client"]),
        tls,
        s2s_tls,
        modules: old.modules.clone(),
        iq_handlers: old.iq_handlers.clone(),
        pre_auth_handlers: old.pre_auth_handlers.clone(),
        account_iq_handlers: old.account_iq_handlers.clone(),
        hooks: old.hooks.clone(),
        services: old.services.clone(),
        sm: old.sm.clone(),
        csi: old.csi.clone(),
        fast: old.fast.clone(),
        ping: old.ping.clone(),
    };
    server.set_live(live);
    Ok(())
}

/// Re-read the configuration file and swap it in. On any error the
/// running configuration stays. Returns what to tell the admin.
pub fn reload_config(server: &Server) -> Result<String, String> {
    let old = server.live();
    let Some(path) = old.config.source.clone() else {
        return Err(
            "the server runs with the built-in configuration (no -c FILE): nothing to reload"
                .into(),
        );
    };
    let new = Config::load(&path).map_err(|e| {
        format!("{e}\nThe configuration was not reloaded; the old one stays in effect.")
    })?;
    let mut notes = Vec::new();
    let restart_only = [
        (
            "listen",
            format!("{:?}", old.config.listen) != format!("{:?}", new.listen),
        ),
        ("data_dir", old.config.data_dir != new.data_dir),
        (
            "archive_engine",
            old.config.archive_engine != new.archive_engine,
        ),
        ("ctl_socket", old.config.ctl_socket != new.ctl_socket),
        ("loglevel", old.config.loglevel != new.loglevel),
        ("log_format", old.config.log_json != new.log_json),
    ];
    for (key, changed) in restart_only {
        if changed {
            notes.push(format!(
                "{}: `{key}` changed; it takes effect only after a restart",
                path.display()
            ));
        }
    }
    let (live, warnings) = build(new).map_err(|e| {
        format!("{e}\nThe configuration was not reloaded; the old one stays in effect.")
    })?;
    // Keep what only a restart changes, so the running state stays true.
    let mut config = (*live.config).clone();
    config.listen = old.config.listen.clone();
    config.data_dir = old.config.data_dir.clone();
    config.archive_engine = old.config.archive_engine;
    config.ctl_socket = old.config.ctl_socket.clone();
    config.loglevel = old.config.loglevel;
    config.log_json = old.config.log_json;
    let live = Live {
        config: Arc::new(config),
        ..live
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    server.set_live(live);
    tracing::info!("configuration reloaded from {}", path.display());
    let mut text = format!("Configuration reloaded from {}", path.display());
    for n in notes.iter().chain(warnings.iter()) {
        text.push_str("\nwarning: ");
        text.push_str(n);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use xep_support::hook_lists::HookLists;
    use xep_support::hooks::Hooks;

    /// The embedded default modules' hook lists: what a message, a session
    /// and a tick call (issue 13: not every module's no-op hooks).
    #[test]
    fn the_default_modules_hook_lists() {
        let c = crate::config::Config::embedded_default();
        let (modules, warnings) = xep_support::registry::build(&c.modules, &c.module_globals());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(modules.len() > 15);
        let lists = HookLists::new(&modules);
        let expect: &[(Hooks, &[&str])] = &[
            (Hooks::FILTER_INBOUND, &["mod_blocking", "mod_invites"]),
            (
                Hooks::FILTER_OUTBOUND,
                &["mod_vcard_xupdate", "mod_blocking"],
            ),
            (Hooks::MESSAGE_FROM_SESSION, &["mod_carbons", "mod_mam"]),
            (
                Hooks::FILTER_MESSAGE_TO_ACCOUNT,
                &["mod_carbons", "mod_mam"],
            ),
            (Hooks::MESSAGE_DELIVERED, &["mod_carbons", "mod_push"]),
            (Hooks::MESSAGE_STORED_OFFLINE, &["mod_push"]),
            (
                Hooks::SESSION_OPENED,
                &["mod_mam", "mod_vcard_xupdate", "mod_blocking", "mod_pep"],
            ),
            (
                Hooks::SESSION_CLOSED,
                &[
                    "mod_carbons",
                    "mod_mam",
                    "mod_vcard_xupdate",
                    "mod_blocking",
                    "mod_last",
                    "mod_pep",
                    "mod_muc",
                ],
            ),
            (Hooks::PRESENCE_AVAILABLE, &["mod_pep"]),
            (Hooks::ROOM_MENTION, &["mod_push"]),
            (Hooks::TICK, &["mod_muc"]),
        ];
        assert_eq!(expect.len(), Hooks::NAMED.len());
        for (hook, names) in expect {
            assert_eq!(&lists.names(*hook), names, "{hook:?}");
        }
    }

    /// The server's own `Module` implementations (the roster iq) declare
    /// each hook they override, as the modules of `xep-support` do.
    #[test]
    fn the_server_s_modules_declare_their_hooks() {
        fn walk(dir: &std::path::Path, found: &mut Vec<String>, impls: &mut usize) {
            for e in std::fs::read_dir(dir).expect("read the sources") {
                let p = e.expect("a directory entry").path();
                if p.is_dir() {
                    walk(&p, found, impls);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let src = std::fs::read_to_string(&p).expect("read a source file");
                    *impls += src.matches("impl Module for").count();
                    for m in xep_support::hooks::undeclared_overrides(&src) {
                        found.push(format!("{}: {m}", p.display()));
                    }
                }
            }
        }
        let (mut found, mut impls) = (Vec::new(), 0);
        walk(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
            &mut impls,
        );
        assert!(impls >= 1, "the roster iq's impl was found");
        assert!(found.is_empty(), "{found:#?}");
    }
}
