//! Builds the enabled modules from the config's `modules:` section.

use crate::module::{Globals, Module};
use std::sync::Arc;

/// Module names this crate implements.
pub const KNOWN: &[&str] = &[
    "mod_disco",
    "mod_ping",
    "mod_private",
    "mod_vcard",
    "mod_vcard_xupdate",
    "mod_blocking",
    "mod_version",
    "mod_time",
    "mod_last",
    "mod_pep",
    "mod_carbons",
    "mod_client_state",
    "mod_stream_mgmt",
    "mod_adhoc",
    "mod_configure",
    "mod_register",
    "mod_caps",
    "mod_avatar",
    "mod_http_upload",
    "mod_push",
    "mod_muc",
    "mod_mam",
];

/// Options each module accepts (some only for ejabberd compatibility) (ejabberd's names); any
/// other option is reported as unsupported.
fn accepted_options(name: &str) -> &'static [&'static str] {
    match name {
        "mod_ping" => crate::ping::OPTIONS,
        "mod_http_upload" => crate::http_upload::OPTIONS,
        "mod_push" => crate::push::OPTIONS,
        "mod_stream_mgmt" => crate::stream_mgmt::OPTIONS,
        "mod_client_state" => crate::client_state::OPTIONS,
        "mod_disco" => &["server_info", "extra_domains", "name"],
        "mod_version" => &["show_os"],
        "mod_private" | "mod_blocking" | "mod_last" | "mod_vcard_xupdate" => &[
            "db_type",
            "use_cache",
            "cache_size",
            "cache_life_time",
            "cache_missed",
        ],
        "mod_vcard" => &[
            "db_type",
            "use_cache",
            "cache_size",
            "cache_life_time",
            "cache_missed",
            "search",
            "host",
            "hosts",
            "name",
            "matches",
            "allow_return_all",
            "search_all_hosts",
            "vcard",
        ],
        "mod_pep" => &["max_items_node", "max_payload_size"],
        "mod_register" => crate::register::OPTIONS,
        "mod_adhoc" => &["report_commands_node"],
        "mod_configure" => &[],
        "mod_muc" => crate::muc::OPTIONS,
        "mod_mam" => crate::mam::OPTIONS,
        _ => &[],
    }
}

/// A non-negative integer option, or `default`.
fn uint_option(opts: &serde_yaml_ng::Value, key: &str, default: usize) -> usize {
    match opts.get(key) {
        Some(serde_yaml_ng::Value::Number(n)) => n.as_u64().map(|n| n as usize).unwrap_or(default),
        _ => default,
    }
}

/// A warning about one module: its name and the message.
pub type ModuleWarning = (String, String);

/// Build the modules named in the config, in order. Returns the modules and
/// warnings (module name, message) for names this server does not implement
/// (ejabberd configs list many) and for options it does not know.
pub fn build(
    config: &[(String, serde_yaml_ng::Value)],
    globals: &Globals,
) -> (Vec<Arc<dyn Module>>, Vec<ModuleWarning>) {
    let mut modules: Vec<Arc<dyn Module>> = Vec::new();
    let mut warnings = Vec::new();
    // Shared by mod_vcard (writes) and mod_vcard_xupdate (reads).
    let photo_hashes = Arc::new(crate::vcard::PhotoHashes::default());
    // mod_pep is built once and shared with the bridges that use it: the
    // XEP-0402 bookmarks bridge (with mod_private) and the XEP-0398 avatar
    // bridge (mod_avatar). Each bridge is a hook the bridged module calls.
    let has = |m: &str| config.iter().any(|(n, _)| n == m);
    let pep = config
        .iter()
        .find(|(n, _)| n == "mod_pep")
        .map(|(_, opts)| {
            let mut pep = crate::pep::Pep::new(
                uint_option(opts, "max_items_node", crate::pep::DEFAULT_MAX_ITEMS),
                uint_option(opts, "max_payload_size", crate::pep::DEFAULT_MAX_PAYLOAD),
            );
            if has("mod_private") {
                pep = pep.with_hook(Arc::new(crate::bookmarks::ToPrivate));
            }
            if has("mod_avatar") && has("mod_vcard") {
                pep = pep.with_hook(Arc::new(crate::avatar::PepToVcard {
                    hashes: photo_hashes.clone(),
                }));
            }
            Arc::new(pep)
        });
    let private_hook = pep.clone().map(|pep| {
        Arc::new(crate::bookmarks::FromPrivate { pep }) as Arc<dyn crate::private::PrivateHook>
    });
    let vcard_hook = pep
        .clone()
        .filter(|_| has("mod_avatar"))
        .map(|pep| Arc::new(crate::avatar::VcardToPep { pep }) as Arc<dyn crate::vcard::VcardHook>);
    for (name, opts) in config {
        let mut o = crate::opts::Opts::new(opts);
        let module: Arc<dyn Module> = match name.as_str() {
            "mod_ping" => Arc::new(crate::ping::Ping::from_opts(&mut o)),
            "mod_disco" => Arc::new(crate::disco::Disco::from_opts(opts)),
            "mod_private" => Arc::new(crate::private::Private {
                hook: private_hook.clone(),
            }),
            "mod_vcard" => Arc::new(crate::vcard::Vcard {
                hashes: photo_hashes.clone(),
                hook: vcard_hook.clone(),
            }),
            "mod_vcard_xupdate" => Arc::new(crate::vcard::VcardXupdate {
                hashes: photo_hashes.clone(),
            }),
            "mod_blocking" => Arc::new(crate::blocking::Blocking::default()),
            "mod_version" => Arc::new(crate::version::Version {
                show_os: o.bool("show_os", true),
            }),
            "mod_time" => Arc::new(crate::time::Time),
            "mod_last" => Arc::new(crate::last::Last),
            "mod_pep" => {
                // Read (above) before the loop; here only to warn about bad values.
                o.count("max_items_node", None);
                o.count("max_payload_size", None);
                match &pep {
                    Some(p) => p.clone(),
                    None => continue,
                }
            }
            "mod_carbons" => Arc::new(crate::carbons::Carbons::default()),
            "mod_caps" => Arc::new(crate::caps::Caps::default()),
            "mod_push" => Arc::new(crate::push::Push::from_opts(&mut o)),
            "mod_http_upload" => {
                Arc::new(crate::http_upload::HttpUpload::from_opts(&mut o, globals))
            }
            "mod_avatar" => {
                if !(has("mod_vcard") && has("mod_pep")) {
                    warnings.push((
                        name.clone(),
                        "mod_avatar converts between mod_vcard and mod_pep; enable both, or it does nothing".to_string(),
                    ));
                }
                Arc::new(crate::avatar::Avatar)
            }
            "mod_mam" => {
                let default = o.word("default", &["always", "never", "roster"], "always");
                let expires = o.timeout("archive_expires_after", None);
                Arc::new(crate::mam::Mam::new(
                    crate::mam::Policy::parse(default).unwrap_or(crate::mam::Policy::Always),
                    expires,
                ))
            }
            "mod_stream_mgmt" => Arc::new(crate::stream_mgmt::StreamMgmt::from_opts(&mut o)),
            "mod_client_state" => Arc::new(crate::client_state::ClientState::from_opts(&mut o)),
            "mod_adhoc" => Arc::new(crate::adhoc::AdHoc::default()),
            // ejabberd splits XEP-0050 (mod_adhoc) and XEP-0133
            // (mod_configure); here mod_adhoc carries both, so
            // mod_configure is accepted and adds nothing.
            "mod_configure" => continue,
            "mod_muc" => {
                let mut notes = Vec::new();
                let module = crate::muc::Muc::from_opts(opts, &mut notes);
                warnings.extend(notes.into_iter().map(|n| (name.clone(), n)));
                Arc::new(module)
            }
            "mod_register" => {
                let (module, notes) = crate::register::Register::new(opts, globals);
                warnings.extend(notes.into_iter().map(|n| (name.clone(), n)));
                Arc::new(module)
            }
            other => {
                warnings.push((
                    other.to_string(),
                    format!("module {other} is not supported yet and is ignored"),
                ));
                continue;
            }
        };
        if let serde_yaml_ng::Value::Mapping(map) = opts {
            for key in map.keys() {
                let key = key.as_str().unwrap_or("?");
                if !accepted_options(name).contains(&key) {
                    warnings.push((
                        name.clone(),
                        format!("option {key} is not supported and is ignored"),
                    ));
                }
            }
        }
        for w in o.warnings {
            warnings.push((name.clone(), w));
        }
        modules.push(module);
    }
    (modules, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_known_and_warns_unknown() {
        let cfg = vec![
            ("mod_ping".to_string(), serde_yaml_ng::Value::Null),
            ("mod_irc".to_string(), serde_yaml_ng::Value::Null),
        ];
        let (mods, warns) = build(&cfg, &Globals::default());
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_ping");
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].0, "mod_irc");
    }

    #[test]
    fn reads_options_and_warns_on_bad_values() {
        let opts: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("resume_timeout: 30\nmax_ack_queue: many\n").unwrap();
        let cfg = vec![("mod_stream_mgmt".to_string(), opts)];
        let (mods, warns) = build(&cfg, &Globals::default());
        let sm = mods[0]
            .as_any()
            .and_then(|a| a.downcast_ref::<crate::stream_mgmt::StreamMgmt>())
            .unwrap();
        assert_eq!(sm.resume_timeout, std::time::Duration::from_secs(30));
        assert_eq!(sm.max_ack_queue, Some(5000));
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(warns[0].1.contains("max_ack_queue"));
    }
}
