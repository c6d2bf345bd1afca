//! XEP-0198 Stream Management (`mod_stream_mgmt`, `urn:xmpp:sm:3`): the
//! stream feature and ejabberd's options. The protocol itself (`<enable/>`,
//! `<r/>`/`<a/>` counting, `<resume/>`, the detached session waiting for a
//! resumption) runs in the server's c2s stream code, which reads these
//! options through [`crate::module::Module::as_any`].

use std::time::Duration;

use crate::element::Element;
use crate::module::Module;
use crate::ns;
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

/// ejabberd's option names this module reads.
pub const OPTIONS: &[&str] = &[
    "resume_timeout",
    "max_resume_timeout",
    "ack_timeout",
    "max_ack_queue",
    "resend_on_timeout",
    "queue_type",
];

impl Default for StreamMgmt {
    fn default() -> Self {
        StreamMgmt {
            resume_timeout: Duration::from_secs(300),
            max_resume_timeout: Duration::from_secs(300),
            ack_timeout: Some(Duration::from_secs(60)),
            max_ack_queue: Some(5000),
        }
    }
}

impl StreamMgmt {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        let d = StreamMgmt::default();
        let resume_timeout = o
            .timeout("resume_timeout", Some(d.resume_timeout))
            .unwrap_or(Duration::from_secs(u32::MAX as u64));
        let max_resume_timeout = o
            .timeout("max_resume_timeout", Some(resume_timeout))
            .unwrap_or(Duration::from_secs(u32::MAX as u64))
            .max(resume_timeout);
        // Unacked stanzas always go to another resource or offline storage
        // when a session ends (never lost); the option is accepted for
        // ejabberd configs and its value changes nothing.
        let _ = o.word(
            "resend_on_timeout",
            &["false", "true", "if_offline"],
            "false",
        );
        // Queues are in memory; `file` is accepted and behaves as `ram`.
        let _ = o.word("queue_type", &["ram", "file"], "ram");
        StreamMgmt {
            resume_timeout,
            max_resume_timeout,
            ack_timeout: o.timeout("ack_timeout", d.ack_timeout),
            max_ack_queue: o.count("max_ack_queue", d.max_ack_queue),
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
