//! Builds the enabled modules from the config's `modules:` section.

use crate::module::{Globals, Module};
use std::sync::Arc;

/// Module names this crate implements.
pub const KNOWN: &[&str] = &[
    "mod_adhoc",
    "mod_configure",
    "mod_disco",
    "mod_ping",
    "mod_register",
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
        "mod_register" => crate::register::OPTIONS,
        "mod_adhoc" => &["report_commands_node"],
        "mod_configure" => &[],
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
    globals: &Globals,
) -> (Vec<Arc<dyn Module>>, Vec<ModuleWarning>) {
    let mut modules: Vec<Arc<dyn Module>> = Vec::new();
    let mut warnings = Vec::new();
    for (name, opts) in config {
        let module: Arc<dyn Module> = match name.as_str() {
            "mod_ping" => Arc::new(crate::ping::Ping),
            "mod_disco" => Arc::new(crate::disco::Disco),
            "mod_adhoc" => Arc::new(crate::adhoc::AdHoc::default()),
            // ejabberd splits XEP-0050 (mod_adhoc) and XEP-0133
            // (mod_configure); here mod_adhoc carries both, so
            // mod_configure is accepted and adds nothing.
            "mod_configure" => continue,
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
        let (mods, warns) = build(&cfg, &Globals::default());
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_ping");
        assert_eq!(warns.len(), 1);
        assert_eq!(warns[0].0, "mod_muc");
    }
}
