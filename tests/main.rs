//! Rookery's integration tests, in one test binary: each module below is one
//! area (its file in `tests/` says what it covers), and all of them start the
//! real `rookery` binary on loopback through the shared harness in
//! [`common`]. One binary instead of one per file: the build links it once,
//! which keeps a clean-clone build small on disk and quick.
//!
//! Run one area with `cargo test --test integration MODULE::`, e.g.
//! `cargo test --test integration im_offline::`.
//!
//! Naming rule: a module is named by feature, never by spec number:
//! `AREA.rs` or `AREA_TOPIC.rs`, where AREA is the part of Rookery under
//! test: `c2s`, `s2s`, `component`, `config`, `im`, `ctl`, `xml`, `mod_NAME` for a
//! module (NAME exactly as its key under `modules:`, e.g. `mod_muc`,
//! `mod_stream_mgmt`), `interop_PROGRAM` for a third-party client driving
//! the server (`s2s_PROGRAM` for a third-party server), `compliance` for
//! compliance suites. The XEPs and RFC sections a module checks are named
//! in its header comment (see docs/architecture.md, "Tests").

mod common;

mod c2s_auth;
mod c2s_bosh;
mod c2s_sasl2;
mod c2s_session;
mod c2s_stream;
mod c2s_websocket;
mod cluster;
mod cluster_faults;
mod cluster_replica;
mod cluster_routing;
mod compliance_suites;
mod component;
mod config_log_format;
mod config_modules;
mod ctl;
mod ctl_admin;
mod ctl_check;
mod ctl_check_deploy;
mod ctl_lifecycle;
mod ctl_migrate_real;
mod ctl_piefxis;
mod im_offline;
mod im_presence;
mod im_roster;
mod interop_converse;
mod interop_go_sendxmpp;
mod interop_slixmpp;
mod interop_slixmpp_admin;
mod interop_slixmpp_blocking_pep;
mod interop_slixmpp_im;
mod interop_slixmpp_mam;
mod interop_slixmpp_muc;
mod interop_slixmpp_pubsub;
mod interop_slixmpp_session;
mod interop_xmppjs;
mod mod_adhoc;
mod mod_auth_fast;
mod mod_avatar;
mod mod_blocking;
mod mod_caps;
mod mod_carbons;
mod mod_client_state;
mod mod_disco_features;
mod mod_http_api;
mod mod_http_upload;
mod mod_invites;
mod mod_mam;
mod mod_mam_engines;
mod mod_mam_large;
mod mod_mam_storage;
mod mod_muc;
mod mod_muc_archive;
mod mod_muc_federation;
mod mod_muc_moderation;
mod mod_muc_push;
mod mod_muc_register;
mod mod_muc_vcard;
mod mod_muc_voice;
mod mod_pep;
mod mod_ping;
mod mod_private;
mod mod_prometheus;
mod mod_pubsub;
mod mod_pubsub_federation;
mod mod_push;
mod mod_register;
mod mod_stream_mgmt;
mod mod_stun_disco;
mod mod_vcard;
mod mod_version_time_last;
mod s2s;
mod s2s_ejabberd;
mod s2s_prosody;
mod sm_hibernation;
mod storage_faults;
mod storage_pgsql;
mod xml_output;
mod xml_wellformed;
