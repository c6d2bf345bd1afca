//! XEP-0198 Stream Management (`mod_stream_mgmt`, `urn:xmpp:sm:3`): the
//! stream feature and ejabberd's options. The protocol itself (`<enable/>`,
//! `<r/>`/`<a/>` counting, `<resume/>`, the detached session waiting for a
//! resumption) runs in the server's c2s stream code, which reads these
//! options through [`crate::module::Module::as_any`].
//!
//! With `mod_push` on, the resumption defaults are long enough for a phone
//! in a pocket ([`PUSH_RESUME_TIMEOUT`], one hour: iOS suspends an app's
//! socket within seconds and wakes it only through a push); options given
//! in the configuration always win (a shorter `resume_timeout` still lets
//! a client ask for the hour with `max`). Invariant: `max_resume_timeout >=
//! resume_timeout`, and a client's `<enable max=…/>` is capped by it.

use std::time::Duration;

use crate::element::Element;
use crate::module::{Hooks, Module};
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec, Use};
use crate::opts::Opts;

/// `mod_stream_mgmt` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMgmt {
    /// How long a dropped resumable session waits for `<resume/>` (default
    /// 300 s; with `mod_push` on, [`PUSH_RESUME_TIMEOUT`]).
    pub resume_timeout: Duration,
    /// The longest timeout a client may ask for with `max` (default: `resume_timeout`).
    pub max_resume_timeout: Duration,
    /// How long an `<r/>` may stay unanswered before the connection is
    /// considered dead (default 60 s; `None`: never).
    pub ack_timeout: Option<Duration>,
    /// Unacknowledged stanzas a session may hold before it is closed with
    /// `<policy-violation/>` (default 5000; `None`: no limit).
    pub max_ack_queue: Option<u64>,
}

/// The default `resume_timeout` (and so `max_resume_timeout`) when
/// `mod_push` is on: one hour, ejabberd's and Monal's guidance for iOS.
pub const PUSH_RESUME_TIMEOUT: Duration = Duration::from_secs(3600);

/// The options of `mod_stream_mgmt` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_stream_mgmt",
    &[
        OptSpec::honoured("resume_timeout", Kind::Timeout, "300", "how long a dropped resumable session waits for `<resume/>` (with `mod_push` on, the default is 3600)"),
        OptSpec::honoured("max_resume_timeout", Kind::Timeout, "`resume_timeout`", "the longest wait a client may ask for (with `mod_push` on, at least 3600 by default)"),
        OptSpec::honoured("ack_timeout", Kind::Timeout, "60", "an `<r/>` unanswered this long means a dead connection"),
        OptSpec::honoured("max_ack_queue", Kind::Count, "5000", "unacknowledged stanzas a session may hold"),
        OptSpec {
            name: "resend_on_timeout",
            kind: Kind::Enum(&["false", "true", "if_offline"]),
            default: "",
            doc: "unacknowledged messages of an ended session always go to another resource or offline storage",
            used: Use::Fixed("if_offline"),
        },
        OptSpec {
            name: "queue_type",
            kind: Kind::Enum(&["ram", "file"]),
            default: "",
            doc: "queues are in memory",
            used: Use::Fixed("ram"),
        },
    ],
    true,
);

impl Default for StreamMgmt {
    /// The spec's defaults.
    fn default() -> Self {
        StreamMgmt::from_opts(&mut Opts::new(&serde_yaml_ng::Value::Null, &SPEC))
    }
}

impl StreamMgmt {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        Self::from_opts_with_push(o, false)
    }

    /// Read the options, with the longer defaults of [`PUSH_RESUME_TIMEOUT`]
    /// when `push` (`mod_push` is on).
    pub fn from_opts_with_push(o: &mut Opts<'_>, push: bool) -> Self {
        let resume_timeout = if push {
            o.timeout_or("resume_timeout", Some(PUSH_RESUME_TIMEOUT))
        } else {
            o.timeout("resume_timeout")
        }
        .unwrap_or(Duration::from_secs(u32::MAX as u64));
        // With push, a client may ask for the phone's hour even where
        // `resume_timeout` is shorter.
        let max_default = if push {
            resume_timeout.max(PUSH_RESUME_TIMEOUT)
        } else {
            resume_timeout
        };
        let max_resume_timeout = o
            .timeout_or("max_resume_timeout", Some(max_default))
            .unwrap_or(Duration::from_secs(u32::MAX as u64))
            .max(resume_timeout);
        // `resend_on_timeout` and `queue_type` are `Use::Fixed`: unacked
        // stanzas always go to another resource or offline storage when a
        // session ends (never lost), and queues are in memory.
        StreamMgmt {
            resume_timeout,
            max_resume_timeout,
            ack_timeout: o.timeout("ack_timeout"),
            max_ack_queue: o.count("max_ack_queue"),
        }
    }

    /// The resumption timeout for a client that asked for `max` seconds.
    pub fn timeout_for(&self, requested: Option<u64>) -> Duration {
        match requested {
            Some(s) if s > 0 => Duration::from_secs(s).min(self.max_resume_timeout),
            _ => self.resume_timeout,
        }
    }
}

impl Module for StreamMgmt {
    fn name(&self) -> &'static str {
        "mod_stream_mgmt"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("sm", ns::SM)]
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(yaml: &str, push: bool) -> StreamMgmt {
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
        StreamMgmt::from_opts_with_push(&mut Opts::new(&v, &SPEC), push)
    }

    #[test]
    fn push_lengthens_the_defaults_but_not_given_options() {
        let plain = load("{}", false);
        assert_eq!(plain.resume_timeout, Duration::from_secs(300));
        let push = load("{}", true);
        assert_eq!(push.resume_timeout, PUSH_RESUME_TIMEOUT);
        assert_eq!(push.max_resume_timeout, PUSH_RESUME_TIMEOUT);
        let given = load("{resume_timeout: 60, max_resume_timeout: 7200}", true);
        assert_eq!(given.resume_timeout, Duration::from_secs(60));
        assert_eq!(given.max_resume_timeout, Duration::from_secs(7200));
        let short = load("{resume_timeout: 300}", true);
        assert_eq!(short.resume_timeout, Duration::from_secs(300));
        assert_eq!(short.max_resume_timeout, PUSH_RESUME_TIMEOUT);
        let max_only = load("{max_resume_timeout: 10800}", true);
        assert_eq!(max_only.resume_timeout, PUSH_RESUME_TIMEOUT);
        assert_eq!(max_only.max_resume_timeout, Duration::from_secs(10800));
    }

    #[test]
    fn a_clients_max_is_capped() {
        let sm = load("{resume_timeout: 60, max_resume_timeout: 600}", false);
        assert_eq!(sm.timeout_for(None), Duration::from_secs(60));
        assert_eq!(sm.timeout_for(Some(0)), Duration::from_secs(60));
        assert_eq!(sm.timeout_for(Some(120)), Duration::from_secs(120));
        assert_eq!(sm.timeout_for(Some(86400)), Duration::from_secs(600));
    }
}
