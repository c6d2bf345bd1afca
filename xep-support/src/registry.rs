//! Builds the enabled modules from the config's `modules:` section.

use crate::module::Module;
use std::sync::Arc;

/// Module names this crate implements.
pub const KNOWN: &[&str] = &[
    "mod_disco",
    "mod_ping",
    "mod_carbons",
    "mod_client_state",
    "mod_stream_mgmt",
];

/// Options each module accepts (some only for ejabberd compatibility) (ejabberd's names); any
/// other option is reported as unsupported.
fn accepted_options(name: &str) -> &'static [&'static str] {
    match name {
        "mod_ping" => crate::ping::OPTIONS,
        "mod_stream_mgmt" => crate::stream_mgmt::OPTIONS,
        "mod_client_state" => crate::client_state::OPTIONS,
        "mod_disco" => &["server_info", "extra_domains", "name"],
        _ => &[],
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
    for (name, opts) in config {
        let mut o = crate::opts::Opts::new(opts);
        let module: Arc<dyn Module> = match name.as_str() {
            "mod_ping" => Arc::new(crate::ping::Ping::from_opts(&mut o)),
            "mod_disco" => Arc::new(crate::disco::Disco),
            "mod_carbons" => Arc::new(crate::carbons::Carbons::default()),
            "mod_stream_mgmt" => Arc::new(crate::stream_mgmt::StreamMgmt::from_opts(&mut o)),
            "mod_client_state" => Arc::new(crate::client_state::ClientState::from_opts(&mut o)),
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
            ("mod_muc".to_string(), serde_yaml_ng::Value::Null),
        ];
        let (mods, warns) = build(&cfg);
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_ping");
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].0, "mod_muc");
    }

    #[test]
    fn reads_options_and_warns_on_bad_values() {
        let opts: serde_yaml_ng::Value =
            serde_yaml_ng::from_str("resume_timeout: 30\nmax_ack_queue: many\n").unwrap();
        let cfg = vec![("mod_stream_mgmt".to_string(), opts)];
        let (mods, warns) = build(&cfg);
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
