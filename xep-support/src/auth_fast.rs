//! XEP-0484 Fast Authentication Streamlining Tokens (`mod_auth_fast`, as
//! ejabberd names it): the options — how long a token lives
//! (`token_lifetime`, 30 days) and after how long a use of it gets a fresh
//! one (`token_refresh_age`, 1 day). The tokens themselves, the HT-SHA-256
//! mechanisms and the SASL2 elements are the server's (`src/auth/fast.rs`,
//! `src/c2s/negotiation/sasl2.rs`), which read these options through
//! [`crate::module::Module::as_any`]. Without this module no token is
//! issued and no `<fast/>` feature is offered.

use std::time::Duration;

use crate::module::{Hooks, Module};
use crate::options::{Kind, ModuleSpec, OptSpec};
use crate::opts::Opts;

/// XEP-0484's namespace.
pub const NS: &str = "urn:xmpp:fast:0";

/// `mod_auth_fast` and its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthFast {
    /// How long a token is valid after it is issued.
    pub token_lifetime: Duration,
    /// A token used when it is older than this is replaced by a new one.
    pub token_refresh_age: Duration,
}

/// The options of `mod_auth_fast` (ejabberd's names).
pub const SPEC: ModuleSpec = ModuleSpec::module(
    "mod_auth_fast",
    &[
        OptSpec::honoured(
            "token_lifetime",
            Kind::Timeout,
            "30 days",
            "how long a FAST token is valid",
        ),
        OptSpec::honoured(
            "token_refresh_age",
            Kind::Timeout,
            "1 day",
            "a token used when older than this is rotated",
        ),
        OptSpec::storage("db_type", Kind::Any),
    ],
    false,
);

/// The longest lifetime kept (a year): `infinity` is capped to it.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

impl AuthFast {
    /// Read the options; bad values become warnings and keep defaults.
    pub fn from_opts(o: &mut Opts<'_>) -> Self {
        let token_lifetime = o.timeout("token_lifetime").unwrap_or(MAX_LIFETIME);
        let token_refresh_age = o
            .timeout("token_refresh_age")
            .unwrap_or(MAX_LIFETIME)
            .min(token_lifetime);
        AuthFast {
            token_lifetime: token_lifetime.min(MAX_LIFETIME),
            token_refresh_age,
        }
    }
}

impl Module for AuthFast {
    fn name(&self) -> &'static str {
        "mod_auth_fast"
    }
    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
