//! Tests of the configuration loader: defaults, the shipped example, a real
//! ejabberd.yml, error positions, macros, paths and the rule helpers.

use std::net::IpAddr;
use std::path::Path;

use super::*;

/// Loads text as `rookery.yml` in `/etc/rookery`.
fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_str(text, "rookery.yml", Path::new("/etc/rookery"))
}

/// The error message (with position) for text that must not load.
fn error(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e.to_string(),
    }
}

fn ip(text: &str) -> Option<IpAddr> {
    Some(text.parse().unwrap())
}

#[test]
fn embedded_default_matches_the_documented_setup() {
    let c = Config::embedded_default();
    assert_eq!(c.source, None);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.hosts, ["localhost"]);
    assert_eq!(c.loglevel, LogLevel::Info);
    assert_eq!(c.data_dir, PathBuf::from("rookery-data"));
    assert_eq!(c.ctl_socket, PathBuf::from("rookery-data/rookery.ctl"));
    assert_eq!(c.auth_password_format, PasswordFormat::Scram);
    assert_eq!(c.scram_iterations, 4096);
    assert!(c.certfiles.is_empty());

    assert_eq!(c.listen.len(), 6);
    assert!(c
        .listen
        .iter()
        .any(|l| l.port == 5443 && l.tls && l.upload_path.as_deref() == Some("/upload")));
    assert!(c
        .listen
        .iter()
        .all(|l| l.port != 5443 || l.invites_path.as_deref() == Some("/invites")));
    assert_eq!(
        c.module_globals().invites_url.as_deref(),
        Some("https://@HOST@:5443/invites")
    );
    for ip_text in ["127.0.0.1", "::1"] {
        let addr: IpAddr = ip_text.parse().unwrap();
        let starttls = c
            .listen
            .iter()
            .find(|l| l.port == 5222 && l.ip == addr)
            .unwrap();
        assert_eq!(starttls.module, ListenerModule::C2s);
        assert!(starttls.starttls && starttls.starttls_required && !starttls.tls);
        assert_eq!(starttls.max_stanza_size, Some(262_144));
        let direct = c
            .listen
            .iter()
            .find(|l| l.port == 5223 && l.ip == addr)
            .unwrap();
        assert!(direct.tls);
        assert_eq!(direct.module, ListenerModule::C2s);
    }
    let names: Vec<&str> = c.modules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "mod_disco",
            "mod_caps",
            "mod_ping",
            "mod_carbons",
            "mod_mam",
            "mod_client_state",
            "mod_stream_mgmt",
            "mod_private",
            "mod_vcard",
            "mod_vcard_xupdate",
            "mod_avatar",
            "mod_blocking",
            "mod_version",
            "mod_time",
            "mod_last",
            "mod_pep",
            "mod_push",
            "mod_muc",
            "mod_register",
            "mod_invites",
            "mod_http_upload"
        ]
    );
    // Every module in the embedded default is one this server provides,
    // with options it reads.
    let (mods, warnings) = xep_support::registry::build(&c.modules, &c.module_globals());
    assert_eq!(mods.len(), names.len());
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.modules[0].1, serde_yaml_ng::Value::Null);

    assert_eq!(c.max_user_sessions("alice", "localhost"), Some(10));
    assert_eq!(c.max_user_offline_messages("alice", "localhost"), Some(100));
    assert!(c.access_allows("c2s", None, ip("127.0.0.1")));
    assert_eq!(
        c.shaper_for("c2s_shaper", Some(("alice", "localhost")), None),
        Some(Shaper {
            rate: 3000,
            burst_size: 20000
        })
    );
}

#[test]
fn example_config_loads_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/example.org.pem"), "pem").unwrap();
    let text = include_str!("../../docs/rookery.example.yml");
    let c = Config::from_str(text, "rookery.example.yml", dir.path()).unwrap();
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    assert_eq!(c.hosts, ["example.org"]);
    assert_eq!(c.certfiles, [dir.path().join("certs/example.org.pem")]);
    assert_eq!(c.listen.len(), 3);
    assert_eq!(c.listen[0].max_stanza_size, Some(262_144), "macro value");
    assert_eq!(c.s2s_use_starttls, S2sStartTls::Optional);
    assert!(c.listen[2].starttls && !c.listen[2].starttls_required);
    assert!(c.acl_matches("admin", Some(("admin", "example.org")), None));
    assert!(!c.access_allows("c2s", Some(("spammer", "example.org")), None));
    assert!(c.access_allows("c2s", Some(("alice", "example.org")), None));
    assert_eq!(
        c.max_user_offline_messages("admin", "example.org"),
        Some(5000)
    );
    assert_eq!(
        c.max_user_offline_messages("alice", "example.org"),
        Some(100)
    );
    assert_eq!(
        c.shaper_for("c2s_shaper", Some(("admin", "example.org")), None),
        None
    );
    assert_eq!(
        c.shaper_for("s2s_shaper", None, ip("192.0.2.1"))
            .map(|s| s.rate),
        Some(100_000)
    );
}

/// Modelled on the ejabberd.yml that ejabberd ships.
const EJABBERD_YML: &str = r#"###
###              ejabberd configuration file
###
hosts:
  - localhost
  - Example.COM

loglevel: info

certfiles:
  - /nonexistent-rookery-test/live/*/*.pem

listen:
  -
    port: 5222
    ip: "::"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    starttls_required: true
  -
    port: 5223
    ip: "::"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: c2s_shaper
    access: c2s
    tls: true
  -
    port: 5269
    ip: "::"
    module: ejabberd_s2s_in
    max_stanza_size: 524288
    shaper: s2s_shaper
  -
    port: 5443
    ip: "::"
    module: ejabberd_http
    tls: true
    request_handlers:
      /admin: ejabberd_web_admin
      /api: mod_http_api
      /bosh: mod_bosh
      /captcha: ejabberd_captcha
      /upload: mod_http_upload
      /ws: ejabberd_http_ws
  -
    port: 5280
    ip: "::"
    module: ejabberd_http
    request_handlers:
      /admin: ejabberd_web_admin
      /.well-known/acme-challenge: ejabberd_acme
  -
    port: 3478
    ip: "::"
    transport: udp
    module: ejabberd_stun
    use_turn: true
  -
    port: 1883
    ip: "::"
    module: mod_mqtt
    backlog: 1000

s2s_use_starttls: optional

acl:
  local:
    user_regexp: ""
  loopback:
    ip:
      - 127.0.0.0/8
      - ::1/128

access_rules:
  local:
    allow: local
  c2s:
    deny: blocked
    allow: all
  announce:
    allow: admin
  configure:
    allow: admin
  muc_create:
    allow: local
  pubsub_createnode:
    allow: local
  trusted_network:
    allow: loopback

api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
  "admin access":
    who:
      access:
        allow:
          - acl: loopback
          - acl: admin
      oauth:
        scope: "ejabberd:admin"
        access:
          allow:
            - acl: loopback
            - acl: admin
    what:
      - "*"
      - "!stop"
      - "!start"
  "public commands":
    who:
      ip: 127.0.0.1/8
    what:
      - status
      - connected_users_number

shaper:
  normal:
    rate: 3000
    burst_size: 20000
  fast: 100000

shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages:
    5000: admin
    100: all
  c2s_shaper:
    none: admin
    normal: all
  s2s_shaper: fast

modules:
  mod_adhoc: {}
  mod_admin_extra: {}
  mod_announce:
    access: announce
  mod_avatar: {}
  mod_blocking: {}
  mod_bosh: {}
  mod_caps: {}
  mod_carboncopy: {}
  mod_client_state: {}
  mod_configure: {}
  mod_disco: {}
  mod_fail2ban: {}
  mod_http_api: {}
  mod_http_upload:
    put_url: https://@HOST@:5443/upload
    custom_headers:
      "Access-Control-Allow-Origin": "https://@HOST@"
      "Access-Control-Allow-Methods": "GET,HEAD,PUT,OPTIONS"
      "Access-Control-Allow-Headers": "Content-Type"
  mod_last: {}
  mod_mam:
    assume_mam_usage: true
    default: always
  mod_mqtt: {}
  mod_muc:
    access:
      - allow
    access_admin:
      - allow: admin
    access_create: muc_create
    access_persistent: muc_create
    access_mam:
      - allow
    default_room_options:
      mam: true
  mod_muc_admin: {}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {}
  mod_privacy: {}
  mod_private: {}
  mod_proxy65:
    access: local
    max_connections: 5
  mod_pubsub:
    access_createnode: pubsub_createnode
    plugins:
      - flat
      - pep
    force_node_config:
      storage:bookmarks:
        access_model: whitelist
  mod_push: {}
  mod_push_keepalive: {}
  mod_register:
    ip_access: trusted_network
  mod_roster:
    versioning: true
  mod_s2s_dialback: {}
  mod_shared_roster: {}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
  mod_stun_disco: {}
  mod_vcard: {}
  mod_vcard_xupdate: {}
  mod_version:
    show_os: false
"#;

#[test]
fn real_ejabberd_yml_loads_with_warnings_naming_unsupported_items() {
    let c = Config::from_str(EJABBERD_YML, "ejabberd.yml", Path::new("/etc/ejabberd")).unwrap();
    assert_eq!(c.hosts, ["localhost", "example.com"]);
    assert_eq!(
        c.listen.len(),
        4,
        "c2s, c2s tls, s2s, https with /upload; plain http/stun/mqtt skipped"
    );
    assert_eq!(c.listen[2].module, ListenerModule::S2s);
    assert_eq!(c.listen[3].module, ListenerModule::Http);
    assert_eq!(c.listen[3].upload_path.as_deref(), Some("/upload"));
    // ejabberd's mod_bosh handler is served, with mod_bosh's options.
    assert_eq!(c.listen[3].bosh_paths, vec!["/bosh"]);
    assert!(!w_contains_bosh_warning(&c.warnings));
    assert!(c.listen[2].starttls, "s2s_use_starttls: optional");
    assert_eq!(c.modules.len(), 36);
    assert_eq!(c.modules[0].0, "mod_adhoc");
    assert_eq!(c.modules[35].0, "mod_version");

    let w = c.warnings.join("\n");
    let expect = [
        "ejabberd.yml:11: certfiles[0]: \"/nonexistent-rookery-test/live/*/*.pem\" matches no file",
        "ejabberd.yml:49: listen[4]: listener module `ejabberd_http` on port 5280",
        "ejabberd.yml:56: listen[5]: listener module `ejabberd_stun` on port 3478",
        "ejabberd.yml:62: listen[6]: listener module `mod_mqtt` on port 1883",
        "access rule `c2s` refers to ACL `blocked`, which is not defined",
        "access rule `announce` refers to ACL `admin`",
        "ejabberd.yml:106: api_permissions.admin access.who.oauth: Rookery has no OAuth; this entry never matches",
        "ejabberd.yml:115: api_permissions.admin access.what[2]: no command `start` in Rookery",
        "shaper rule `c2s_shaper` refers to ACL `admin`",
    ];
    for e in expect {
        assert!(w.contains(e), "missing warning {e:?} in:\n{w}");
    }
    // Nothing about request_handlers or other options of skipped listeners.
    assert!(!w.contains("listen[4].request_handlers"), "{w}");
    assert!(
        c.warnings.iter().all(|w| w.starts_with("ejabberd.yml:")),
        "{w}"
    );

    // Module options are kept for the modules to read.
    let upload = c.module_options("mod_http_upload").unwrap();
    assert_eq!(
        upload["put_url"].as_str(),
        Some("https://@HOST@:5443/upload")
    );
    assert_eq!(
        c.module_options("mod_roster").unwrap()["versioning"],
        serde_yaml_ng::Value::Bool(true)
    );

    // Modules nobody provides are warned about with their line; the ones
    // Rookery's core provides (mod_roster, mod_offline, mod_s2s_dialback)
    // and ejabberd's mod_carboncopy are recognised with their options.
    let line_of = |m: &str| c.module_line(m).unwrap();
    for m in [
        "mod_mqtt",
        "mod_privacy",
        "mod_proxy65",
        "mod_shared_roster",
    ] {
        let e = format!(
            "ejabberd.yml:{}: modules.{m}: module `{m}` is not provided by Rookery and is ignored",
            line_of(m)
        );
        assert!(c.warnings.contains(&e), "missing {e:?} in:\n{w}");
    }
    // mod_pubsub is provided: its options (a named access rule, both
    // plugins, a forced node configuration) load without a warning.
    assert!(!w.contains("mod_pubsub"), "{w}");
    for m in [
        "mod_roster",
        "mod_offline",
        "mod_carboncopy",
        "mod_stream_mgmt",
        "mod_s2s_dialback",
        "mod_muc",
        "mod_mam",
    ] {
        assert!(
            !w.contains(&format!("module `{m}` is not provided")),
            "{m}: {w}"
        );
    }
    assert!(w.contains(&format!(
        "ejabberd.yml:{}: modules.mod_mam: option `assume_mam_usage` accepted for ejabberd configurations but not implemented by Rookery; ignored",
        line_of("mod_mam")
    )), "{w}");
    assert!(
        w.contains("modules.mod_muc: option `access_mam` accepted"),
        "{w}"
    );
    assert_eq!(c.offline_limit_rule, "max_user_offline_messages");
    // mod_muc's inline access rules are defined under generated names.
    let muc = c.module_options("mod_muc").unwrap();
    assert_eq!(
        muc["access"].as_str(),
        Some("modules.mod_muc.access (inline)")
    );
    assert!(c.access_allows(
        "modules.mod_muc.access (inline)",
        Some(("bob", "localhost")),
        None
    ));
    assert!(
        w.contains("access rule `modules.mod_muc.access_admin (inline)` refers to ACL `admin`"),
        "{w}"
    );

    // The server decides which modules it supports; warnings carry lines.
    let module_warnings = c.unsupported_module_warnings(&["mod_disco", "mod_ping"]);
    assert_eq!(module_warnings.len(), 34);
    assert_eq!(
        module_warnings[0],
        format!(
            "ejabberd.yml:{}: modules.mod_adhoc: module `mod_adhoc` is not supported by Rookery and is ignored",
            c.module_line("mod_adhoc").unwrap()
        )
    );
    assert_eq!(c.module_line("mod_adhoc"), Some(140));

    // Rules behave as in ejabberd.
    assert!(c.access_allows("local", Some(("alice", "example.com")), None));
    assert!(!c.access_allows("local", Some(("alice", "elsewhere.net")), None));
    assert!(c.access_allows("trusted_network", None, ip("::1")));
    assert!(!c.access_allows("configure", Some(("alice", "localhost")), None));
    assert_eq!(c.max_user_sessions("alice", "localhost"), Some(10));
    assert_eq!(c.max_user_offline_messages("alice", "localhost"), Some(100));
    assert_eq!(
        c.shaper_for("c2s_shaper", None, ip("192.0.2.7"))
            .map(|s| s.rate),
        Some(3000)
    );
    assert_eq!(
        c.shaper_for("s2s_shaper", None, None).map(|s| s.burst_size),
        Some(100_000)
    );
}

#[test]
fn yaml_syntax_error_has_position() {
    let e = error("hosts:\n  - localhost\n listen: []\n");
    assert_eq!(
        e,
        "rookery.yml:3:2: YAML syntax error: while parsing a block mapping, did not find expected key"
    );
    let e = error("hosts: [localhost\nloglevel: info\n");
    assert!(e.starts_with("rookery.yml:2:"), "{e}");
    assert!(e.contains("YAML syntax error"), "{e}");
    let e = error("hosts:\n\t- localhost\n");
    assert!(e.starts_with("rookery.yml:2:"), "{e}");
}

#[test]
fn wrong_port_type_and_range() {
    let text = "hosts: [example.org]\nlisten:\n  -\n    module: ejabberd_c2s\n    port: abc\n";
    assert_eq!(
        error(text),
        "rookery.yml:5:11: listen[0].port: expected a port number 1-65535, found \"abc\""
    );
    let text = "hosts: [example.org]\nlisten:\n  - {module: ejabberd_c2s, port: 0}\n  - {module: c2s, port: 70000}\n";
    assert_eq!(
        error(text),
        "rookery.yml:4:25: listen[1].port: expected a port number 1-65535, found \"70000\""
    );
    let text = "hosts: [example.org]\nlisten:\n  - {module: c2s, port: -1}\n";
    assert!(error(text).starts_with("rookery.yml:3:25: listen[0].port: expected a port number"));
}

#[test]
fn unknown_loglevel() {
    assert_eq!(
        error("hosts: [example.org]\nloglevel: verbose\n"),
        "rookery.yml:2:11: loglevel: expected one of none, emergency, alert, critical, error, warning, \
         notice, info, debug (or 0-5), found \"verbose\""
    );
    assert!(error("hosts: [example.org]\nloglevel: 6\n").starts_with("rookery.yml:2:11: loglevel"));
}

#[test]
fn loglevels_and_tracing_directives() {
    let level = |text: &str| {
        load(&format!("hosts: [a.org]\nloglevel: {text}\n"))
            .unwrap()
            .loglevel
    };
    assert_eq!(level("none"), LogLevel::None);
    assert_eq!(level("0"), LogLevel::None);
    assert_eq!(level("alert"), LogLevel::Critical);
    assert_eq!(level("2"), LogLevel::Error);
    assert_eq!(level("warning"), LogLevel::Warning);
    assert_eq!(level("notice"), LogLevel::Notice);
    assert_eq!(level("4"), LogLevel::Info);
    assert_eq!(level("debug"), LogLevel::Debug);
    assert_eq!(LogLevel::None.tracing_directive(), "off");
    assert_eq!(LogLevel::Critical.tracing_directive(), "error");
    assert_eq!(LogLevel::Warning.tracing_directive(), "warn");
    assert_eq!(LogLevel::Notice.tracing_directive(), "info");
    assert_eq!(LogLevel::Debug.tracing_directive(), "debug");
}

#[test]
fn bad_ip_address() {
    let text = "hosts: [example.org]\nlisten:\n  - port: 5222\n    module: ejabberd_c2s\n    ip: 10.0.0.256\n";
    assert_eq!(
        error(text),
        "rookery.yml:5:9: listen[0].ip: expected an IP address such as \"::\" or 127.0.0.1, found \"10.0.0.256\""
    );
    let text = "hosts: [example.org]\nacl:\n  lan:\n    ip: 10.0.0.0/40\n";
    assert!(
        error(text).starts_with("rookery.yml:4:9: acl.lan.ip: expected an IP address or network")
    );
}

#[test]
fn undefined_macro_is_pointed_out() {
    let text = "hosts: [example.org]\nlisten:\n  - port: XMPP_PORT\n    module: ejabberd_c2s\n";
    assert_eq!(
        error(text),
        "rookery.yml:3:11: listen[0].port: expected a port number 1-65535, found \"XMPP_PORT\" \
         (looks like a macro, but no define_macro defines XMPP_PORT)"
    );
}

#[test]
fn invalid_host_name() {
    let e = error("hosts:\n  - example.org\n  - \"bad host\"\n");
    assert!(
        e.starts_with("rookery.yml:3:5: hosts[1]: expected a domain name, found \"bad host\" is not a valid domain name"),
        "{e}"
    );
    assert!(error("hosts: [-bad.org]\n").starts_with("rookery.yml:1:9: hosts[0]"));
    assert!(error("hosts: []\n").contains("hosts: expected a non-empty list"));
    assert!(error("hosts: [a.org, A.org]\n").contains("hosts[1]: host a.org is listed twice"));
    assert_eq!(
        error("loglevel: info\n"),
        "rookery.yml:1:1: missing required option `hosts` (the domains this server serves)"
    );
}

#[test]
fn other_value_errors() {
    assert!(error("hosts: [a.org]\nauth_password_format: md5\n")
        .contains("2:23: auth_password_format: expected scram or plain"));
    assert!(error("hosts: [a.org]\nauth_scram_iterations: 100\n")
        .contains("expected an iteration count 4096-10000000"));
    assert!(error("hosts: [a.org]\nauth_method: kerberos\n")
        .contains("2:14: auth_method: expected internal"));
    assert!(error("hosts: [a.org]\ns2s_use_starttls: sometimes\n")
        .contains("s2s_use_starttls: expected false, optional or required"));
    assert!(error("hosts: [a.org]\nshaper:\n  fast: lots\n")
        .contains("3:9: shaper.fast: expected a rate"));
    assert!(error("hosts: [a.org]\nshaper:\n  fast: {burst_size: 5}\n")
        .contains("missing required option `rate`"));
    assert!(error("hosts: [a.org]\nmodules:\n  mod_ping: yes\n")
        .contains("3:13: modules.mod_ping: expected a map of module options"));
    assert!(error("- just\n- a list\n").contains("1:1: configuration: expected a map of options"));
    assert!(error("hosts: [a.org]\nhosts: [b.org]\n").contains("2:1: duplicate key \"hosts\""));
}

#[test]
fn unsupported_and_unknown_options_are_warnings_with_lines() {
    let text = "hosts: [a.org]\nsql_prepared_statements: true\nhost_config:\n  a.org:\n    loglevel: debug\ninclude_config_file: extra.yml\n\
                colour: blue\nmod_ping: {}\nauth_method: [internal, ldap]\nauth_password_format: plain\n";
    let c = load(text).unwrap();
    let w = &c.warnings;
    assert_eq!(w.len(), 7, "{w:#?}");
    assert_eq!(
        w[0],
        "rookery.yml:2: `sql_prepared_statements`: ejabberd option not supported by Rookery; ignored"
    );
    assert_eq!(
        w[1],
        "rookery.yml:3: `host_config`: per-host configuration is not supported by Rookery; settings for a.org ignored"
    );
    assert!(
        w[2].starts_with("rookery.yml:6: `include_config_file`: not supported"),
        "{}",
        w[2]
    );
    assert_eq!(w[3], "rookery.yml:7: `colour`: unknown option ignored");
    assert!(w[4].starts_with(
        "rookery.yml:8: `mod_ping`: unknown option ignored (modules belong under `modules:`)"
    ));
    assert!(w[5].starts_with(
        "rookery.yml:9: auth_method[1]: authentication method `ldap` is not supported"
    ));
    // Plain is accepted but stored as SCRAM.
    assert!(w[6].starts_with("rookery.yml:10: auth_password_format: `plain` is not supported"));
    assert_eq!(c.auth_password_format, PasswordFormat::Plain);
}

#[test]
fn plain_password_format_warns() {
    let c = load("hosts: [a.org]\nauth_password_format: plain\n").unwrap();
    assert_eq!(c.warnings.len(), 1);
    assert!(c.warnings[0].starts_with("rookery.yml:2: auth_password_format: `plain`"));
}

#[test]
fn macros_replace_scalars_lists_and_maps() {
    let text = "define_macro:\n  HOSTS: [example.org, example.net]\n  PORT: 5222\n  TLS_ON: true\n  \
                ADMIN: {user: [root@example.org]}\n  NESTED: PORT\n\
                hosts: HOSTS\nlisten:\n  - {port: NESTED, module: c2s, tls: TLS_ON}\nacl:\n  admin: ADMIN\n\
                modules:\n  mod_muc:\n    max_users: PORT\n";
    let c = load(text).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.hosts, ["example.org", "example.net"]);
    assert_eq!(c.listen[0].port, 5222);
    assert!(c.listen[0].tls);
    assert!(c.acl_matches("admin", Some(("root", "example.org")), None));
    assert_eq!(
        c.module_options("mod_muc").unwrap()["max_users"],
        serde_yaml_ng::Value::from(5222u64)
    );

    let e = error("define_macro:\n  A: B\n  B: A\nhosts: [a.org]\nloglevel: A\n");
    assert!(e.contains("refers to itself"), "{e}");
    // A macro value that is wrong is reported where the macro is defined.
    let e = error(
        "define_macro:\n  PORT: web\nhosts: [a.org]\nlisten:\n  - {port: PORT, module: c2s}\n",
    );
    assert!(
        e.starts_with("rookery.yml:2:9: listen[0].port: expected a port number"),
        "{e}"
    );
}

#[test]
fn relative_paths_resolve_against_the_config_directory() {
    let c = load("hosts: [a.org]\n").unwrap();
    assert_eq!(c.data_dir, Path::new("/etc/rookery/rookery-data"));
    assert_eq!(
        c.ctl_socket,
        Path::new("/etc/rookery/rookery-data/rookery.ctl")
    );
    let c = load("hosts: [a.org]\ndata_dir: data\n").unwrap();
    assert_eq!(c.data_dir, Path::new("/etc/rookery/data"));
    assert_eq!(c.ctl_socket, Path::new("/etc/rookery/data/rookery.ctl"));
    let c = load("hosts: [a.org]\ndata_dir: /var/lib/rookery\nctl_socket: run/ctl.sock\n").unwrap();
    assert_eq!(c.data_dir, Path::new("/var/lib/rookery"));
    assert_eq!(c.ctl_socket, Path::new("/etc/rookery/run/ctl.sock"));
}

#[test]
fn certfile_globs_are_expanded() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    for d in ["a.org", "b.org", ".hidden"] {
        std::fs::create_dir_all(live.join(d)).unwrap();
        std::fs::write(live.join(d).join("fullchain.pem"), "x").unwrap();
        std::fs::write(live.join(d).join("privkey.pem"), "x").unwrap();
        std::fs::write(live.join(d).join("README"), "x").unwrap();
    }
    std::fs::write(dir.path().join("single.pem"), "x").unwrap();
    let text = "hosts: [a.org]\ncertfiles:\n  - live/*/*.pem\n  - single.pem\n  - missing.pem\n  - nothing/*.pem\n  - live/a.org/privkey.pem\n";
    let c = Config::from_str(text, "r.yml", dir.path()).unwrap();
    assert_eq!(
        c.certfiles,
        [
            live.join("a.org/fullchain.pem"),
            live.join("a.org/privkey.pem"),
            live.join("b.org/fullchain.pem"),
            live.join("b.org/privkey.pem"),
            dir.path().join("single.pem"),
        ]
    );
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("r.yml:5: certfiles[2]:"));
    assert!(c.warnings[1].starts_with("r.yml:6: certfiles[3]: \"nothing/*.pem\" matches no file"));
}

#[test]
fn load_reads_a_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rookery.yml");
    std::fs::write(&path, "hosts: [Example.org]\ndata_dir: data\n").unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.source.as_deref(), Some(path.as_path()));
    assert_eq!(c.hosts, ["example.org"]);
    assert_eq!(c.data_dir, dir.path().join("data"));

    std::fs::write(
        &path,
        "hosts: [a.org]\nlisten:\n  - port: abc\n    module: c2s\n",
    )
    .unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!((e.line, e.column), (3, 11));
    assert_eq!(e.file, path.display().to_string());
    assert!(e
        .to_string()
        .starts_with(&format!("{}:3:11: listen[0].port", path.display())));

    let e = Config::load(&dir.path().join("missing.yml")).unwrap_err();
    assert_eq!(e.line, 0);
    assert!(
        e.to_string()
            .contains("missing.yml: cannot read the configuration file"),
        "{e}"
    );
}

#[test]
fn session_and_offline_limits_default_to_unlimited() {
    let c = load("hosts: [a.org]\n").unwrap();
    assert_eq!(c.max_user_sessions("u", "a.org"), None);
    assert_eq!(c.max_user_offline_messages("u", "a.org"), None);
    let c = load(
        "hosts: [a.org]\nacl:\n  admin:\n    user: boss@a.org\nshaper_rules:\n  max_user_sessions:\n    - infinity: admin\n    - 3\n  \
         max_user_offline_messages:\n    - 10: admin\n",
    );
    let c = c.unwrap();
    assert_eq!(c.max_user_sessions("boss", "a.org"), None);
    assert_eq!(c.max_user_sessions("u", "a.org"), Some(3));
    assert_eq!(c.max_user_offline_messages("boss", "a.org"), Some(10));
    assert_eq!(
        c.max_user_offline_messages("u", "a.org"),
        None,
        "no entry matches"
    );
}

#[test]
fn shaper_for_rules_names_and_none() {
    let c = load(
        "hosts: [a.org]\nshaper:\n  slow: 500\n  fast: {rate: 50000, burst_size: 200000}\n  free: infinity\n\
         shaper_rules:\n  c2s_shaper:\n    - fast: {ip: 10.0.0.0/8}\n    - slow\n  numeric: 1234\n  unl: free\n",
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let fast = Shaper {
        rate: 50000,
        burst_size: 200_000,
    };
    assert_eq!(c.shaper_for("c2s_shaper", None, ip("10.1.1.1")), Some(fast));
    assert_eq!(
        c.shaper_for("c2s_shaper", None, ip("192.0.2.1"))
            .map(|s| s.rate),
        Some(500)
    );
    assert_eq!(
        c.shaper_for("fast", None, None),
        Some(fast),
        "a shaper name directly"
    );
    assert_eq!(
        c.shaper_for("numeric", None, None),
        Some(Shaper {
            rate: 1234,
            burst_size: 1234
        })
    );
    assert_eq!(c.shaper_for("unl", None, None), None);
    assert_eq!(c.shaper_for("free", None, None), None);
    assert_eq!(c.shaper_for("none", None, None), None);
    assert_eq!(c.shaper_for("unknown", None, None), None);
}

#[test]
fn access_allows_builtins_and_unknown_rules() {
    let c = load(
        "hosts: [a.org]\nacl:\n  lo:\n    ip: 127.0.0.1\naccess_rules:\n  r:\n    - allow: lo\n",
    )
    .unwrap();
    assert!(c.access_allows("all", None, None));
    assert!(!c.access_allows("none", None, ip("127.0.0.1")));
    assert!(!c.access_allows("nonexistent", None, ip("127.0.0.1")));
    assert!(c.access_allows("r", None, ip("127.0.0.1")));
    assert!(!c.access_allows("r", None, ip("127.0.0.2")));
}

#[test]
fn dangling_references_are_warned() {
    let text = "hosts: [a.org]\nlisten:\n  - {port: 5222, module: c2s, access: c2s, shaper: c2s_shaper}\n\
                access_rules:\n  r:\n    allow: friends\nshaper_rules:\n  s: turbo\n  max_user_sessions: turbo\n";
    let c = load(text).unwrap();
    let w = c.warnings.join("\n");
    assert!(
        w.contains("rookery.yml:3: listen[0].access: access rule `c2s` is not defined"),
        "{w}"
    );
    assert!(
        w.contains("rookery.yml:3: listen[0].shaper: `c2s_shaper` is neither"),
        "{w}"
    );
    assert!(
        w.contains("rookery.yml:5: access rule `r` refers to ACL `friends`"),
        "{w}"
    );
    assert!(
        w.contains("rookery.yml:8: shaper rule `s` refers to unknown shaper `turbo`"),
        "{w}"
    );
    assert!(
        w.contains("rookery.yml:9: shaper rule `max_user_sessions` should yield a number"),
        "{w}"
    );
}

#[test]
fn listener_inline_access_rules_work() {
    let c = load(
        "hosts: [a.org]\nlisten:\n  - port: 5222\n    module: c2s\n    access:\n      - allow: {ip: 127.0.0.0/8}\n",
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let rule = c.listen[0].access.clone().unwrap();
    assert!(c.access_allows(&rule, None, ip("127.0.0.1")));
    assert!(!c.access_allows(&rule, None, ip("192.0.2.1")));
}

#[test]
fn test_harness_style_config_loads_cleanly() {
    // The shape tests/common/server.rs writes: JSON-quoted strings, port 0.
    let text = "hosts: [\"localhost\"]\nloglevel: debug\ndata_dir: \"/tmp/x/data\"\n\
                ctl_socket: \"/tmp/x/data/rookery.ctl\"\nlisten:\n  - port: 0\n    ip: 127.0.0.1\n    \
                module: ejabberd_c2s\n    starttls_required: true\n    max_stanza_size: 65536\n  - port: 0\n    \
                ip: 127.0.0.1\n    module: ejabberd_c2s\n    tls: true\nshaper_rules:\n  max_user_sessions: 2\n\
                modules:\n  mod_ping: {}\n  mod_disco: {}\n";
    let c = load(text).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.listen.len(), 2);
    assert_eq!(c.listen[0].port, 0);
    assert_eq!(c.listen[0].max_stanza_size, Some(65536));
    assert_eq!(c.ctl_socket, Path::new("/tmp/x/data/rookery.ctl"));
    assert_eq!(c.max_user_sessions("alice", "localhost"), Some(2));
}

fn w_contains_bosh_warning(warnings: &[String]) -> bool {
    warnings
        .iter()
        .any(|w| w.contains("`mod_bosh` is not") || w.contains("modules.mod_bosh"))
}

#[test]
fn empty_optional_sections_are_fine() {
    let c = load("hosts: a.org\nacl:\naccess_rules:\nshaper:\nshaper_rules:\nmodules:\nlisten:\n")
        .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(c.listen.is_empty() && c.modules.is_empty());
    assert_eq!(c.language, "en");
    assert_eq!(c.s2s_use_starttls, S2sStartTls::Disabled);
}

#[test]
fn documentation_covers_every_supported_option() {
    let doc = include_str!("../../docs/configuration.md");
    for option in SUPPORTED_OPTIONS {
        assert!(
            doc.contains(&format!("`{option}`")),
            "docs/configuration.md does not document `{option}`"
        );
    }
    for option in EJABBERD_OPTIONS {
        assert!(
            doc.contains(option),
            "docs/configuration.md does not list ignored option {option}"
        );
    }
    for option in super::sql::OPTIONS {
        assert!(
            doc.contains(&format!("`{option}`")),
            "docs/configuration.md does not document `{option}`"
        );
    }
}

#[test]
fn component_listeners() {
    let c = load(
        "hosts: [a.org]\nlisten:\n  - port: 5347\n    module: ejabberd_service\n    hosts:\n      irc.a.org:\n        password: one\n      bot.a.org: {}\n    password: two\n",
    )
    .unwrap();
    let l = &c.listen[0];
    assert_eq!(l.module, ListenerModule::Service);
    let hosts: Vec<(&str, &str)> = l
        .service_hosts
        .iter()
        .map(|h| (h.domain.as_str(), h.password.as_str()))
        .collect();
    assert_eq!(hosts, [("irc.a.org", "one"), ("bot.a.org", "two")]);
    assert!(
        error("hosts: [a.org]\nlisten:\n  - port: 5347\n    module: ejabberd_service\n")
            .contains("an ejabberd_service listener needs `hosts`")
    );
    assert!(error(
        "hosts: [a.org]\nlisten:\n  - port: 5347\n    module: ejabberd_service\n    hosts:\n      irc.a.org: {}\n"
    )
    .contains("6:7: listen[0].hosts.irc.a.org: no `password`"));
    assert!(error(
        "hosts: [a.org]\nlisten:\n  - port: 5347\n    module: ejabberd_service\n    password: x\n    hosts:\n      a.org: {}\n"
    )
    .contains("component domain a.org is also one of `hosts`"));
}

#[test]
fn mod_disco_server_info_is_checked_with_file_and_line() {
    let good = "hosts: [example.org]\nmodules:\n  mod_disco:\n    server_info:\n      - modules: all\n        name: abuse-addresses\n        urls: [\"mailto:abuse@example.org\"]\n";
    let c = load(good).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let bad = "hosts: [example.org]\nmodules:\n  mod_disco:\n    server_info:\n      - name: abuse-addresses\n        urls: [\"abuse@example.org\"]\n";
    assert_eq!(
        error(bad),
        "rookery.yml:6:16: modules.mod_disco.server_info[0].urls[0]: expected a URI such as \
         mailto:abuse@example.org, xmpp:admin@example.org or https://example.org/contact, \
         found \"abuse@example.org\""
    );
    let typo = "hosts: [example.org]\nmodules:\n  mod_disco:\n    server_info:\n      - name: abuse-address\n        urls: [\"mailto:abuse@example.org\"]\n";
    let c = load(typo).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("rookery.yml:5")
                && w.contains("abuse-address is not a XEP-0157 field")),
        "{:?}",
        c.warnings
    );
}

/// ejabberd refuses to start on a wrong module option; so does Rookery,
/// with file, line, column, the option and what was expected.
#[test]
fn module_option_errors_have_positions() {
    let e = error("hosts: [a.org]\nmodules:\n  mod_mam:\n    default: sometimes\n");
    assert_eq!(
        e,
        "rookery.yml:4:14: modules.mod_mam.default: expected one of always, never, roster, found \"sometimes\""
    );
    let e = error("hosts: [a.org]\nmodules:\n  mod_ping: {send_pings: maybe}\n");
    assert_eq!(
        e,
        "rookery.yml:3:26: modules.mod_ping.send_pings: expected true or false, found \"maybe\""
    );
    let e = error("hosts: [a.org]\nmodules:\n  mod_muc:\n    max_users: 0\n");
    assert!(
        e.starts_with(
            "rookery.yml:4:16: modules.mod_muc.max_users: expected an integer, at least 1"
        ),
        "{e}"
    );
    let e = error("hosts: [a.org]\nmodules:\n  mod_mam:\n    defualt: always\n");
    assert!(e.starts_with("rookery.yml:4:5: modules.mod_mam: unknown option `defualt` of mod_mam; did you mean `default`?"), "{e}");
    // Macros are replaced before the check.
    let c = load("define_macro:\n  SM: 30\nhosts: [a.org]\nmodules:\n  mod_stream_mgmt: {resume_timeout: SM}\n").unwrap();
    assert_eq!(
        c.module_options("mod_stream_mgmt").unwrap()["resume_timeout"],
        serde_yaml_ng::Value::from(30u64)
    );
    // mod_offline's rule name is applied.
    let c = load("hosts: [a.org]\nshaper_rules:\n  offline_cap: 7\nmodules:\n  mod_offline: {access_max_user_messages: offline_cap}\n").unwrap();
    assert_eq!(c.max_user_offline_messages("alice", "a.org"), Some(7));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

/// Every module option (the specs beside each module's code, and the
/// core's) is in docs/configuration.md, each with its default on the same
/// line, so the documentation cannot drift from the code.
#[test]
fn every_module_option_is_documented_with_its_default() {
    use xep_support::options::Use;
    let doc = include_str!("../../docs/configuration.md");
    let mut missing = Vec::new();
    for spec in modules::all_specs() {
        let tick = format!("`{}`", spec.name);
        // A module's part: the sections whose heading names it, and the
        // table rows that start with it.
        let mut part: Vec<&str> = Vec::new();
        let mut in_section = false;
        for line in doc.lines() {
            if line.starts_with('#') {
                in_section = line.contains(&tick);
            }
            if in_section || line.starts_with(&format!("| {tick}")) {
                part.push(line);
            }
        }
        if part.is_empty() {
            missing.push(format!("{}: no section or table row", spec.name));
            continue;
        }
        for o in spec.options {
            let name = format!("`{}`", o.name);
            let lines: Vec<&&str> = part.iter().filter(|l| l.contains(&name)).collect();
            if lines.is_empty() {
                missing.push(format!("{}.{}: not documented", spec.name, o.name));
            } else if o.used == Use::Honoured
                && !o.default.is_empty()
                && !lines.iter().any(|l| l.contains(o.default))
            {
                missing.push(format!(
                    "{}.{}: default {} not on the option's line",
                    spec.name, o.name, o.default
                ));
            }
        }
        if spec.storage && !part.iter().any(|l| l.contains("`db_type`")) {
            missing.push(format!(
                "{}: the storage options (`db_type`, ...) not named",
                spec.name
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks:\n{}",
        missing.join("\n")
    );
}

#[test]
fn archive_engine_defaults_to_sled_and_refuses_others_with_position() {
    use crate::storage::ArchiveKind;
    assert_eq!(
        load("hosts: [a.org]\n").unwrap().archive_engine,
        ArchiveKind::Sled
    );
    let c = load("hosts: [a.org]\narchive_engine: fjall\n").unwrap();
    assert_eq!(c.archive_engine, ArchiveKind::Fjall);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    let e = load("hosts: [a.org]\narchive_engine: rocksdb\n").unwrap_err();
    assert_eq!(e.line, 2);
    assert!(
        e.to_string()
            .contains("archive_engine: expected `fjall` or `sled`, found"),
        "{e}"
    );
    assert!(load("hosts: [a.org]\narchive_engine: [fjall]\n").is_err());
}

#[test]
fn default_db_sql_reads_ejabberds_sql_keys_with_positions_in_errors() {
    let c = load("hosts: [a.org]\n").unwrap();
    assert!(c.sql.is_none() && c.sql_options.is_none());
    let c = load(
        "hosts: [a.org]\ndefault_db: sql\nsql_type: pgsql\nsql_server: db.example\nsql_port: 5433\n\
         sql_database: xmpp\nsql_username: rookery\nsql_password: pw\nsql_pool_size: 3\nsql_ssl: true\n\
         sql_query_timeout: 500 ms\nsql_connect_timeout: 2\nauth_method: sql\n",
    )
    .unwrap();
    let o = c.sql.clone().unwrap();
    assert_eq!(
        (
            o.server.as_str(),
            o.port,
            o.database.as_str(),
            o.username.as_str(),
            o.password.as_str(),
            o.pool_size,
            o.ssl
        ),
        ("db.example", 5433, "xmpp", "rookery", "pw", 3, true)
    );
    assert_eq!(o.query_timeout, std::time::Duration::from_millis(500));
    assert_eq!(o.connect_timeout, std::time::Duration::from_secs(2));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert!(
        !format!("{o:?}").contains("pw"),
        "the password is never printed"
    );
    // ejabberd's defaults.
    let o = load("hosts: [a.org]\ndefault_db: sql\nsql_type: pgsql\n")
        .unwrap()
        .sql
        .unwrap();
    assert_eq!(
        (o.server.as_str(), o.port, o.database.as_str(), o.pool_size),
        ("localhost", 5432, "ejabberd", 10)
    );
    // Without default_db: sql the keys are kept for migrate_db only.
    let c = load("hosts: [a.org]\nsql_server: db\n").unwrap();
    assert!(c.sql.is_none());
    assert_eq!(c.sql_options.unwrap().server, "db");
    for (text, want) in [
        (
            "default_db: postgres\n",
            "2:13: default_db: expected `sql` or `mnesia`",
        ),
        (
            "default_db: sql\nsql_type: mysql\n",
            "3:11: sql_type: expected `pgsql`",
        ),
        (
            "default_db: sql\nsql_port: 99999\n",
            "3:11: sql_port: expected a port number 1-65535",
        ),
        (
            "default_db: sql\nsql_pool_size: 0\n",
            "3:16: sql_pool_size: expected a pool size 1-1000",
        ),
        (
            "default_db: sql\nsql_ssl: maybe\n",
            "3:10: sql_ssl: expected true or false",
        ),
        (
            "default_db: sql\nsql_query_timeout: soon\n",
            "3:20: sql_query_timeout: expected a positive duration",
        ),
    ] {
        let e = error(&format!("hosts: [a.org]\n{text}"));
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn cluster_section_needs_sql_and_reports_positions() {
    let c = load(
        "hosts: [a.org]\ndefault_db: sql\nsql_type: pgsql\ncluster:\n  node: n1\n  nats: [\"nats://10.0.0.1:4222\", \"nats://10.0.0.2:4222\"]\n  heartbeat: 1 second\n  node_ttl: 3 seconds\n  request_timeout: 500 ms\n",
    )
    .unwrap();
    let o = c.cluster.unwrap();
    assert_eq!(o.node, "n1");
    assert_eq!(o.nats.len(), 2);
    assert_eq!(o.request_timeout, std::time::Duration::from_millis(500));
    assert_eq!(o.node_ttl, std::time::Duration::from_secs(3));
    assert!(load("hosts: [a.org]\n").unwrap().cluster.is_none());
    let sql = "default_db: sql\nsql_type: pgsql\n";
    for (text, want) in [
        (
            "cluster:\n  node: n1\n  nats: nats://h:4222\n".to_string(),
            "3:3: cluster: needs `default_db: sql`",
        ),
        (
            format!("{sql}cluster:\n  node: 'no spaces'\n  nats: nats://h:4222\n"),
            "5:9: cluster.node: expected a node name",
        ),
        (
            format!("{sql}cluster:\n  node: n1\n  nats: http://h\n"),
            "6:9: cluster.nats[0]: expected a `nats://HOST:PORT` URL",
        ),
        (
            format!("{sql}cluster:\n  nats: nats://h:4222\n"),
            "cluster: `node` (this node's name) is missing",
        ),
        (
            format!("{sql}cluster:\n  node: n1\n"),
            "cluster: `nats`",
        ),
        (
            format!("{sql}cluster:\n  node: n1\n  nats: nats://h\n  heartbeat: 5 seconds\n  node_ttl: 6 seconds\n"),
            "8:13: cluster.node_ttl: expected a duration at least twice `heartbeat`",
        ),
        (
            format!("{sql}cluster:\n  node: n1\n  nats: nats://h\n  nodes: [a]\n"),
            "7:3: cluster: unknown key `nodes`",
        ),
    ] {
        let e = error(&format!("hosts: [a.org]\n{text}"));
        assert!(e.contains(want), "{text:?}: {e}");
    }
}
