//! XEP-0198 Stream Management (`mod_stream_mgmt`, `urn:xmpp:sm:3`): the
//! stream feature and ejabberd's options. The protocol itself (`<enable/>`,
//! `<r/>`/`<a/>` counting, `<resume/>`, the detached session waiting for a
//! resumption) runs in the server's c2s stream code, which reads these
//! options through [`crate::module::Module::as_any`].

use std::time::Duration;

use crate::element::Element;
use crate::module::Module;
use crate::ns;
use crate::options::{Kind, ModuleSpec, OptSpec, Use};
use crate::opts::Opts;

/// `mod_stream_mgmt` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMgmt {
    /// How long a dropped resumable session waits for `<resume/>` (default 300 s).
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

/// The options of `mod_stream_mgmt` (ejabberd's).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_stream_mgmt",
    &[
        OptSpec::honoured("resume_timeout", Kind::Timeout, "300", "how long a dropped resumable session waits for `<resume/>`"),
        OptSpec::honoured("max_resume_timeout", Kind::Timeout, "`resume_timeout`", "the longest wait a client may ask for"),
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
        let resume_timeout = o
            .timeout("resume_timeout")
            .unwrap_or(Duration::from_secs(u32::MAX as u64));
        let max_resume_timeout = o
            .timeout_or("max_resume_timeout", Some(resume_timeout))
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
    fn stream_features(&self) -> Vec<Element> {
        vec![Element::new("sm", ns::SM)]
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
