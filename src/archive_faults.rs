//! The server's side of archive writes that failed after `append` had
//! accepted the messages (a full disk at the write or at the fsync): the
//! engine reports what the write lost ([`ArchiveFailure`], on a bounded
//! channel, see `storage::ArchiveEngine::take_failures`), and this task
//! tells each sender.
//!
//! - A message the owner sent (outgoing): its sender (the stanza's `from`,
//!   the session that sent it) gets `<message type='error'>` with the
//!   original id: `resource-constraint` (type `wait`) for a full disk,
//!   `internal-server-error` otherwise (`StorageError::stanza_error`). The
//!   live copy was delivered already; the error says it is not archived.
//! - A message the owner received (incoming, its copy in the recipient's
//!   archive): nobody to tell; one log line per owner and report.
//!
//! Ordering: the engine queues a report before it fails the tickets it
//! covers, and a session whose durability wait failed
//! ([`Server::archive_durable`]) waits until this task has handled every
//! report queued so far ([`Server::archive_reports_handled`]), so the
//! error reaches the sender before the `<a/>` or iq answer that follows.
//! Nothing here is kept per session.

use std::collections::BTreeMap;
use std::sync::Weak;

use tokio::sync::mpsc;

use crate::server::Server;
use crate::storage::ArchiveFailure;

/// Handle reports until the archive (the sender) or the server is gone.
pub async fn run(server: Weak<Server>, mut reports: mpsc::Receiver<ArchiveFailure>) {
    while let Some(report) = reports.recv().await {
        let Some(server) = server.upgrade() else {
            return;
        };
        handle(&server, report).await;
    }
}

/// Tell the senders of one report's outgoing messages; log the rest.
pub async fn handle(server: &Server, report: ArchiveFailure) {
    let error = &report.error;
    let mut stanza_error = error.stanza_error();
    stanza_error = match stanza_error.text.take() {
        Some(t) => stanza_error.with_text(format!("message not archived: {t}")),
        None => stanza_error.with_text("message not archived"),
    };
    let mut received: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &report.messages {
        if !m.outgoing {
            *received.entry(m.owner.as_str()).or_default() += 1;
            continue;
        }
        let Some(el) = crate::storage::stanza_codec::parse_stored(&m.xml, Some(&m.owner)) else {
            tracing::error!(
                "archive: a message sent by {} was not archived ({error}); it does not parse, \
                 so its sender cannot be told",
                m.owner
            );
            continue;
        };
        tracing::error!(
            "archive: message {} from {} to {} not archived for {} ({error}); the sender gets {}",
            el.attr("id").unwrap_or("(no id)"),
            el.attr("from").unwrap_or("?"),
            el.attr("to").unwrap_or("?"),
            m.owner,
            stanza_error.condition
        );
        crate::router::bounce(server, &el, stanza_error.clone()).await;
    }
    for (owner, n) in received {
        tracing::error!("archive: {n} received messages of {owner} not archived ({error})");
    }
    server.archive_reports_handled(report.seq);
}
