//! Rookery's integration tests, in one test binary: each module below is one
//! area (its file in `tests/` says what it covers), and all of them start the
//! real `rookery` binary on loopback through the shared harness in
//! [`common`]. One binary instead of one per file: the build links it once,
//! which keeps a clean-clone build small on disk and quick.
//!
//! Run one area with `cargo test --test integration MODULE::`, e.g.
//! `cargo test --test integration im_offline::`.

mod common;

mod adhoc;
mod c2s_auth;
mod c2s_session;
mod c2s_stream;
mod compliance_xep0479;
mod ctl;
mod ctl_admin;
mod ctl_check;
mod disco_features;
mod im_offline;
mod im_presence;
mod im_roster;
mod interop_slixmpp;
mod interop_slixmpp_admin;
mod interop_slixmpp_blocking_pep;
mod interop_slixmpp_im;
mod interop_slixmpp_mam;
mod interop_slixmpp_muc;
mod interop_slixmpp_session;
mod mam_storage;
mod migrate_real;
mod mod_avatar;
mod mod_blocking;
mod mod_pep;
mod mod_private;
mod mod_vcard;
mod mod_version_time_last;
mod muc;
mod piefxis;
mod register;
mod s2s;
mod s2s_ejabberd;
mod s2s_prosody;
mod xep0114_component;
mod xep0115_server_caps;
mod xep0198_stream_mgmt;
mod xep0199_server_pings;
mod xep0280_carbons;
mod xep0313_mam;
mod xep0313_mam_large;
mod xep0352_csi;
mod xep0357_push;
mod xep0363_http_upload;
