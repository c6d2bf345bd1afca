//! XEP-0480 SASL upgrade tasks in SASL2: `UPGR-SCRAM-SHA-256`, so an
//! account that has SCRAM-SHA-1 credentials only (imported from Prosody)
//! gains SCRAM-SHA-256 ones at its next SASL2 login without the password
//! being sent: after the mechanism succeeded, `<continue/>` (with the
//! mechanism's additional data) names the task, the client's `<next/>`
//! gets a fresh salt and the iteration count in `<task-data/>`, and the
//! client's `<task-data/>` brings back the SaltedPassword, from which the
//! SCRAM-SHA-256 StoredKey and ServerKey are made and stored beside the
//! SCRAM-SHA-1 ones (kept, as the XEP's business rules ask).
//!
//! The task runs only when the client asked for it and the account needs
//! it; otherwise the request is ignored and the login goes on as usual.

use base64::Engine;
use xep_support::element::Element;
use xep_support::ns;

use super::{Negotiation, Profile, Stop};
use crate::auth::credentials::{random_salt, ScramHash, ScramSecret};

/// XEP-0480's namespaces and the one task offered.
pub const NS_UPGRADE: &str = "urn:xmpp:sasl:upgrade:0";
pub const NS_SCRAM_UPGRADE: &str = "urn:xmpp:scram-upgrade:0";
pub const UPGR_SCRAM_SHA_256: &str = "UPGR-SCRAM-SHA-256";

/// What a task came to.
pub(super) enum Upgrade {
    /// No task ran: the additional data still belongs in `<success/>`.
    NotRun,
    /// The task ran (its `<continue/>` carried the additional data).
    Done,
    /// The client aborted or sent garbage: a failure was sent.
    Failed,
}

impl Negotiation {
    /// The `<upgrade/>` elements for `<authentication/>`.
    pub(super) fn upgrade_features(&self) -> Vec<Element> {
        if !self.server.config().scram_sha256 {
            return Vec::new();
        }
        vec![Element::new("upgrade", NS_UPGRADE).with_text(UPGR_SCRAM_SHA_256)]
    }

    /// Run the upgrade task `req` asks for, if `user`'s account needs it.
    pub(super) async fn upgrade_task(
        &mut self,
        req: &Element,
        user: &str,
        data: &[u8],
    ) -> Result<Upgrade, Stop> {
        let asked = req
            .child_elements()
            .any(|e| e.is("upgrade", NS_UPGRADE) && e.text().trim() == UPGR_SCRAM_SHA_256);
        if !asked || !self.server.config().scram_sha256 {
            return Ok(Upgrade::NotRun);
        }
        let host = self.host.clone().unwrap_or_default();
        let account = crate::storage::AccountKey::new(&host, user);
        let creds = match self.server.storage.get_credentials(account) {
            Ok(Some(c)) if c.needs_upgrade() => c,
            _ => return Ok(Upgrade::NotRun),
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut cont = Element::new("continue", ns::SASL2);
        if !data.is_empty() {
            cont = cont
                .with_child(Element::new("additional-data", ns::SASL2).with_text(b64.encode(data)));
        }
        cont = cont.with_child(
            Element::new("tasks", ns::SASL2)
                .with_child(Element::new("task", ns::SASL2).with_text(UPGR_SCRAM_SHA_256)),
        );
        self.send(&self.framing.to_xml(&cont)).await?;
        let next = self.next_element().await?;
        if next.is("abort", ns::SASL2) {
            self.send(&Profile::Sasl2.failure("aborted")).await?;
            return Ok(Upgrade::Failed);
        }
        if !next.is("next", ns::SASL2) || next.attr("task") != Some(UPGR_SCRAM_SHA_256) {
            self.sasl_failure(Profile::Sasl2, "malformed-request")
                .await?;
            return Ok(Upgrade::Failed);
        }
        let salt = random_salt();
        let iterations = self.server.config().scram_iterations;
        let td = Element::new("task-data", ns::SASL2).with_child(
            Element::new("salt", NS_SCRAM_UPGRADE)
                .with_attr("iterations", iterations.to_string())
                .with_text(b64.encode(&salt)),
        );
        self.send(&self.framing.to_xml(&td)).await?;
        let reply = self.next_element().await?;
        if reply.is("abort", ns::SASL2) {
            self.send(&Profile::Sasl2.failure("aborted")).await?;
            return Ok(Upgrade::Failed);
        }
        let hash = reply
            .child("hash", NS_SCRAM_UPGRADE)
            .filter(|_| reply.is("task-data", ns::SASL2))
            .map(|h| {
                h.text()
                    .chars()
                    .filter(|c| !c.is_whitespace())
                    .collect::<String>()
            })
            .and_then(|t| b64.decode(t).ok())
            .filter(|h| h.len() == 32);
        let Some(mut salted) = hash else {
            self.sasl_failure(Profile::Sasl2, "malformed-request")
                .await?;
            return Ok(Upgrade::Failed);
        };
        let mut full = creds;
        full.sha256 = Some(ScramSecret::from_salted_password(
            ScramHash::Sha256,
            &salted,
            salt,
            iterations,
        ));
        crate::auth::wipe(&mut salted);
        match self.server.storage.set_credentials(account, &full) {
            Ok(_) => tracing::info!(
                "{account}: SCRAM-SHA-256 credentials added by a XEP-0480 upgrade task"
            ),
            Err(e) => {
                tracing::error!("{account}: storing upgraded credentials failed: {e}");
                self.send(&Profile::Sasl2.failure("temporary-auth-failure"))
                    .await?;
                return Ok(Upgrade::Failed);
            }
        }
        Ok(Upgrade::Done)
    }
}
