//! Builds the enabled modules from the config's `modules:` section, and
//! lists the modules this crate implements with their option specs
//! ([`SPECS`]), which the server's config loader checks `modules:` against.

use crate::module::{Globals, Module};
use crate::options::{Kind, ModuleSpec, OptSpec};
use std::sync::Arc;

/// The modules this crate implements, each with the options it takes
/// (declared beside its code where it reads options, here for the modules
/// that take none or only ejabberd's storage options).
pub const SPECS: &[&ModuleSpec] = &[
    &DISCO,
    &crate::ping::SPEC,
    &PRIVATE,
    &VCARD,
    &VCARD_XUPDATE,
    &BLOCKING,
    &VERSION,
    &TIME,
    &LAST,
    &PEP,
    &CARBONS,
    &CARBONCOPY,
    &crate::client_state::SPEC,
    &crate::stream_mgmt::SPEC,
    &ADHOC,
    &CONFIGURE,
    &crate::register::SPEC,
    &CAPS,
    &AVATAR,
    &crate::http_upload::SPEC,
    &crate::push::SPEC,
    &crate::muc::SPEC,
    &crate::mam::SPEC,
    &crate::auth_fast::SPEC,
    &crate::stun_disco::SPEC,
];

/// The spec of a module this crate implements.
pub fn spec(name: &str) -> Option<&'static ModuleSpec> {
    SPECS.iter().copied().find(|s| s.name == name)
}

/// `mod_disco`; `server_info` is checked by the config loader.
pub const DISCO: ModuleSpec = ModuleSpec::module(
    "mod_disco",
    &[
        OptSpec::honoured(
            "server_info",
            Kind::MapList,
            "",
            "XEP-0157 contact addresses",
        ),
        OptSpec::ignored("extra_domains", Kind::Any, "more domains in disco#items"),
        OptSpec::ignored("name", Kind::Any, "the server's name in disco"),
        OptSpec::ignored("access", Kind::Any, "who may discover the server"),
    ],
    false,
);
pub const PRIVATE: ModuleSpec = ModuleSpec::module("mod_private", &[], true);
pub const VCARD: ModuleSpec = ModuleSpec::module(
    "mod_vcard",
    &[
        OptSpec::ignored(
            "search",
            Kind::Any,
            "the vCard search service (not implemented)",
        ),
        OptSpec::ignored("host", Kind::Any, "the search service's domain"),
        OptSpec::ignored("hosts", Kind::Any, "the search service's domains"),
        OptSpec::ignored("name", Kind::Any, "the search service's name"),
        OptSpec::ignored("matches", Kind::Any, "search results at most"),
        OptSpec::ignored("allow_return_all", Kind::Any, "empty searches"),
        OptSpec::ignored("search_all_hosts", Kind::Any, "searching every host"),
        OptSpec::ignored("vcard", Kind::Any, "the search service's vCard"),
    ],
    true,
);
pub const VCARD_XUPDATE: ModuleSpec = ModuleSpec::module("mod_vcard_xupdate", &[], true);
pub const BLOCKING: ModuleSpec = ModuleSpec::module("mod_blocking", &[], true);
pub const VERSION: ModuleSpec = ModuleSpec::module(
    "mod_version",
    &[OptSpec::honoured(
        "show_os",
        Kind::Bool,
        "true",
        "include the operating system and kernel release",
    )],
    false,
);
pub const TIME: ModuleSpec = ModuleSpec::module("mod_time", &[], false);
pub const LAST: ModuleSpec = ModuleSpec::module("mod_last", &[], true);
/// Prosody's `mod_pep` (ejabberd's PEP is a `mod_pubsub` plugin).
pub const PEP: ModuleSpec = ModuleSpec::module(
    "mod_pep",
    &[
        OptSpec::honoured(
            "max_items_node",
            Kind::Int {
                min: 1,
                max: u32::MAX as u64,
            },
            "1000",
            "most items a node keeps (what `pubsub#max_items` = `max` means)",
        ),
        OptSpec::honoured(
            "max_payload_size",
            Kind::Int {
                min: 1,
                max: u32::MAX as u64,
            },
            "262144",
            "largest item payload in bytes",
        ),
    ],
    false,
);
pub const CARBONS: ModuleSpec = ModuleSpec::module("mod_carbons", &[], false);
/// ejabberd's name of `mod_carbons`: the same module.
pub const CARBONCOPY: ModuleSpec = ModuleSpec::module("mod_carboncopy", &[], true);
pub const ADHOC: ModuleSpec = ModuleSpec::module(
    "mod_adhoc",
    &[OptSpec::ignored(
        "report_commands_node",
        Kind::Any,
        "commands listed in disco#items of the commands node",
    )],
    false,
);
/// ejabberd's XEP-0133 module; `mod_adhoc` carries its commands.
pub const CONFIGURE: ModuleSpec = ModuleSpec::module("mod_configure", &[], false);
pub const CAPS: ModuleSpec = ModuleSpec::module("mod_caps", &[], true);
pub const AVATAR: ModuleSpec = ModuleSpec::module(
    "mod_avatar",
    &[
        OptSpec::ignored("convert", Kind::Any, "image format conversion"),
        OptSpec::ignored("rate_limit", Kind::Any, "conversions per minute"),
    ],
    false,
);

/// A warning about one module: its name and the message.
pub type ModuleWarning = (String, String);

/// Build the modules named in the config, in order. Returns the modules and
/// warnings (module name, message) about values. Names this crate does not
/// implement are skipped: the config loader has checked names and options
/// against [`SPECS`] (and the server core's own specs) and warned.
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
            let mut o = crate::opts::Opts::new(opts, &PEP);
            let mut pep = crate::pep::Pep::new(
                o.uint("max_items_node") as usize,
                o.uint("max_payload_size") as usize,
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
        let Some(spec) = spec(name) else { continue };
        let mut o = crate::opts::Opts::new(opts, spec);
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
                show_os: o.bool("show_os"),
            }),
            "mod_time" => Arc::new(crate::time::Time),
            "mod_last" => Arc::new(crate::last::Last),
            "mod_pep" => {
                // Read (above) before the loop; here only to warn about bad values.
                o.uint("max_items_node");
                o.uint("max_payload_size");
                match &pep {
                    Some(p) => p.clone(),
                    None => continue,
                }
            }
            "mod_carbons" => Arc::new(crate::carbons::Carbons::default()),
            // ejabberd's name for the same module; once if both are listed.
            "mod_carboncopy" if has("mod_carbons") => continue,
            "mod_carboncopy" => Arc::new(crate::carbons::Carbons::default()),
            "mod_caps" => Arc::new(crate::caps::Caps::default()),
            "mod_push" => Arc::new(crate::push::Push::from_opts(&mut o)),
            "mod_stun_disco" => Arc::new(crate::stun_disco::StunDisco::from_opts(&mut o, opts)),
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
                let default = o.word("default");
                let expires = o.timeout("archive_expires_after");
                Arc::new(crate::mam::Mam::new(
                    crate::mam::Policy::parse(default).unwrap_or(crate::mam::Policy::Always),
                    expires,
                ))
            }
            "mod_stream_mgmt" => Arc::new(crate::stream_mgmt::StreamMgmt::from_opts_with_push(
                &mut o,
                has("mod_push"),
            )),
            "mod_client_state" => Arc::new(crate::client_state::ClientState::from_opts(&mut o)),
            "mod_auth_fast" => Arc::new(crate::auth_fast::AuthFast::from_opts(&mut o)),
            "mod_adhoc" => Arc::new(crate::adhoc::AdHoc::default()),
            // ejabberd splits XEP-0050 (mod_adhoc) and XEP-0133
            // (mod_configure); here mod_adhoc carries both, so
            // mod_configure is accepted and adds nothing.
            "mod_configure" => continue,
            "mod_muc" => {
                let mut notes = Vec::new();
                // Room archives follow mod_mam (on, with its retention, when it is enabled).
                let mam = config.iter().find(|(n, _)| n == "mod_mam").map(|(_, mo)| {
                    crate::opts::Opts::new(mo, &crate::mam::SPEC).timeout("archive_expires_after")
                });
                let module = crate::muc::Muc::from_opts(opts, &mut notes)
                    .with_archive(mam.is_some(), mam.flatten());
                warnings.extend(notes.into_iter().map(|n| (name.clone(), n)));
                Arc::new(module)
            }
            "mod_register" => {
                let (module, notes) = crate::register::Register::new(opts, globals);
                warnings.extend(notes.into_iter().map(|n| (name.clone(), n)));
                Arc::new(module)
            }
            _ => continue,
        };
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
    fn builds_known_and_skips_others() {
        // The config loader warns about modules nobody provides; the
        // server core's (mod_roster) are not built here either.
        let cfg = vec![
            ("mod_ping".to_string(), serde_yaml_ng::Value::Null),
            ("mod_irc".to_string(), serde_yaml_ng::Value::Null),
            ("mod_roster".to_string(), serde_yaml_ng::Value::Null),
        ];
        let (mods, warns) = build(&cfg, &Globals::default());
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_ping");
        assert!(warns.is_empty(), "{warns:?}");
    }

    #[test]
    fn carboncopy_is_carbons_once() {
        let null = serde_yaml_ng::Value::Null;
        let one = vec![("mod_carboncopy".to_string(), null.clone())];
        let (mods, _) = build(&one, &Globals::default());
        assert_eq!(mods.len(), 1);
        assert_eq!(mods[0].name(), "mod_carbons");
        let both = vec![
            ("mod_carbons".to_string(), null.clone()),
            ("mod_carboncopy".to_string(), null),
        ];
        assert_eq!(build(&both, &Globals::default()).0.len(), 1);
    }

    #[test]
    fn every_spec_builds_a_module() {
        let cfg: Vec<(String, serde_yaml_ng::Value)> = SPECS
            .iter()
            .map(|s| (s.name.to_string(), serde_yaml_ng::Value::Null))
            .collect();
        let (mods, _) = build(&cfg, &Globals::default());
        // mod_configure adds nothing; mod_carboncopy is mod_carbons, once.
        assert_eq!(mods.len(), SPECS.len() - 2);
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

    /// Every spec's default, when it is a literal, is a valid value.
    #[test]
    fn literal_defaults_are_valid() {
        for m in SPECS {
            for o in m.all() {
                if o.used == crate::options::Use::Honoured
                    && !o.default.is_empty()
                    && !o.default.contains(['`', ' '])
                    && !matches!(o.kind, Kind::AccessRule | Kind::Text | Kind::BoolOrText)
                {
                    assert!(
                        crate::options::default_value(o).is_some(),
                        "{}.{}: default {:?} is not {}",
                        m.name,
                        o.name,
                        o.default,
                        o.kind.expected()
                    );
                }
            }
        }
    }

    /// The modules' own constants agree with their specs' defaults.
    #[test]
    fn spec_defaults_match_the_modules_constants() {
        let d = |m: &ModuleSpec, o: &str| m.option(o).unwrap().default.to_string();
        let pep = crate::pep::DEFAULT_MAX_ITEMS.to_string();
        assert_eq!(d(&PEP, "max_items_node"), pep);
        let payload = crate::pep::DEFAULT_MAX_PAYLOAD.to_string();
        assert_eq!(d(&PEP, "max_payload_size"), payload);
        let muc = &crate::muc::SPEC;
        assert_eq!(
            d(muc, "history_size"),
            crate::muc::DEFAULT_HISTORY.to_string()
        );
        assert_eq!(
            d(muc, "max_users"),
            crate::muc::DEFAULT_MAX_USERS.to_string()
        );
        assert_eq!(
            d(muc, "max_user_conferences"),
            crate::muc::DEFAULT_MAX_USER_CONFERENCES.to_string()
        );
        let sm = crate::stream_mgmt::StreamMgmt::default();
        assert_eq!(sm.resume_timeout, std::time::Duration::from_secs(300));
        assert_eq!(sm.max_resume_timeout, sm.resume_timeout);
        assert_eq!(sm.ack_timeout, Some(std::time::Duration::from_secs(60)));
        assert_eq!(sm.max_ack_queue, Some(5000));
        let ping = crate::ping::Ping::default();
        assert!(!ping.send_pings && !ping.kill);
        assert_eq!(ping.ping_interval, std::time::Duration::from_secs(60));
        assert_eq!(ping.ping_ack_timeout, std::time::Duration::from_secs(32));
    }
}
