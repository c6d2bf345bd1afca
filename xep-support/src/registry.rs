//! Builds the enabled modules from the config's `modules:` section.

use crate::module::Module;
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
];

/// Options each module accepts and ignores for now (ejabberd's names); any
/// other option is reported as unsupported.
fn accepted_options(name: &str) -> &'static [&'static str] {
    match name {
        "mod_ping" => &[
            "send_pings",
            "ping_interval",
            "ping_ack_timeout",
            "timeout_action",
        ],
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
) -> (Vec<Arc<dyn Module>>, Vec<ModuleWarning>) {
    let mut modules: Vec<Arc<dyn Module>> = Vec::new();
    let mut warnings = Vec::new();
    // Shared by mod_vcard (writes) and mod_vcard_xupdate (reads).
    let photo_hashes = Arc::new(crate::vcard::PhotoHashes::default());
    // mod_pep is built once and shared with mod_private for XEP-0402 compatibility.
    let has = |m: &str| config.iter().any(|(n, _)| n == m);
    let pep = config
        .iter()
        .find(|(n, _)| n == "mod_pep")
        .map(|(_, opts)| {
            let pep = Arc::new(crate::pep::Pep::new(
                uint_option(opts, "max_items_node", crate::pep::DEFAULT_MAX_ITEMS),
                uint_option(opts, "max_payload_size", crate::pep::DEFAULT_MAX_PAYLOAD),
            ));
            if has("mod_private") {
                pep.enable_bookmarks_compat();
            }
            pep
        });
    for (name, opts) in config {
        let bool_opt = |key: &str, default: bool| -> bool {
            match opts.get(key) {
                None => default,
                Some(serde_yaml_ng::Value::Bool(b)) => *b,
                Some(_) => default,
            }
        };
        for (key, kind) in [
            ("show_os", "a boolean"),
            ("max_items_node", "a number"),
            ("max_payload_size", "a number"),
        ] {
            if let Some(v) = opts.get(key) {
                let ok = match kind {
                    "a boolean" => v.is_bool(),
                    _ => v.as_u64().is_some(),
                };
                if !ok && accepted_options(name).contains(&key) {
                    warnings.push((
                        name.clone(),
                        format!("option {key} must be {kind}; using the default"),
                    ));
                }
            }
        }
        let module: Arc<dyn Module> = match name.as_str() {
            "mod_ping" => Arc::new(crate::ping::Ping),
            "mod_disco" => Arc::new(crate::disco::Disco),
            "mod_private" => Arc::new(crate::private::Private { pep: pep.clone() }),
            "mod_vcard" => Arc::new(crate::vcard::Vcard {
                hashes: photo_hashes.clone(),
            }),
            "mod_vcard_xupdate" => Arc::new(crate::vcard::VcardXupdate {
                hashes: photo_hashes.clone(),
            }),
            "mod_blocking" => Arc::new(crate::blocking::Blocking::default()),
            "mod_version" => Arc::new(crate::version::Version {
                show_os: bool_opt("show_os", true),
            }),
            "mod_time" => Arc::new(crate::time::Time),
            "mod_last" => Arc::new(crate::last::Last),
            "mod_pep" => match &pep {
                Some(p) => p.clone(),
                None => continue,
            },
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
            ("mod_muc".to_string(), serde_yaml_ng::Value::Null),
        ];
        let (mods, warns) = build(&cfg);
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_ping");
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].0, "mod_muc");
    }
}
