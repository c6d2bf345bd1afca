//! The invitation and account-lifecycle commands of the registry
//! (`commands.rs` dispatches to them): `generate_invite`,
//! `generate_invite_with_username`, `generate_password_reset`,
//! `list_invites`, `expire_invite_tokens`, `cleanup_expired_invite_tokens`
//! (ejabberd 26.01's `mod_invites` names; Prosody's reset links),
//! `ban_account`, `unban_account`, `get_ban_details`, `delete_old_users`.
//!
//! Invitations live in `mod_invites`' module store (see
//! `xep_support::invites::token`: hashed, expiring, counted uses); these
//! commands work on the database directly, with or without a running
//! server, and when one runs it adds the landing page URL and ends the
//! sessions of banned or deleted accounts.

use std::sync::Arc;

use xep_support::invites::token::{self, Invite, Kind};
use xep_support::store::ModuleStore as Handle;

use super::commands::{
    account, db_failed, existing_account, no_such_user, served_host, CtlEnv, CtlOutput,
    ServerControl,
};
use crate::storage::modules::ModuleAccess;
use crate::storage::AccountKey;

fn data(env: &CtlEnv) -> ModuleAccess {
    ModuleAccess::new(env.storage.clone())
}

fn store_failed(e: xep_support::store::StoreError) -> CtlOutput {
    CtlOutput::failed(format!("Database error: {e}"))
}

/// `7d`, `12h`, `30m`, `3600` (seconds), `2w`: seconds.
pub fn parse_duration(text: &str) -> Option<u64> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "s" | "sec" | "seconds" => 1,
        "m" | "min" | "minutes" => 60,
        "h" | "hours" => 3600,
        "d" | "days" => 86_400,
        "w" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    n.checked_mul(factor).filter(|&s| s > 0)
}

/// What an invitation command prints: the URI, then the landing page if
/// the running server has one configured.
fn show(server: Option<&Arc<dyn ServerControl>>, invite: &Invite, token: &str) -> CtlOutput {
    let mut out = invite.uri(token);
    if let Some(url) = server.and_then(|s| s.invite_landing_url(invite, token)) {
        out.push('\n');
        out.push_str(&url);
    }
    CtlOutput::ok(out)
}

fn expiry(server: Option<&Arc<dyn ServerControl>>) -> u64 {
    server
        .and_then(|s| s.invite_expire_secs())
        .unwrap_or(token::DEFAULT_EXPIRY_SECS)
}

/// `generate_invite HOST [--reusable N] [--expires DURATION] [--roster-for USER]`.
pub fn generate_invite(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    host: &str,
    options: &[String],
) -> Result<CtlOutput, CtlOutput> {
    let host = served_host(env, host)?;
    let mut invite = Invite::new(Kind::Register, &host, expiry(server), 1);
    let mut rest = options.iter();
    while let Some(opt) = rest.next() {
        let value = |v: Option<&String>| {
            v.cloned().ok_or_else(|| {
                CtlOutput::usage(format!("Error: {opt} needs a value\nUsage: rookery ctl generate_invite HOST [--reusable N] [--expires DURATION] [--roster-for USER]"))
            })
        };
        match opt.as_str() {
            "--reusable" => {
                let v = value(rest.next())?;
                let n: u32 = v.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    CtlOutput::failed(format!("Invalid --reusable '{v}': expected a number of uses, 1 or more"))
                })?;
                invite.uses = n;
                invite.uses_left = n;
            }
            "--expires" => {
                let v = value(rest.next())?;
                let secs = parse_duration(&v).ok_or_else(|| {
                    CtlOutput::failed(format!("Invalid --expires '{v}': expected a duration such as 3600, 30m, 12h, 7d or 2w"))
                })?;
                invite.expires = invite.created.saturating_add(secs);
            }
            "--roster-for" => {
                let v = value(rest.next())?;
                let (user, _) = account(env, &v, &host)?;
                if !env
                    .storage
                    .user_exists(AccountKey::new(&host, &user))
                    .map_err(db_failed)?
                {
                    return Err(no_such_user(&user, &host));
                }
                invite.inviter = Some(user);
                invite.roster = true;
            }
            other => {
                return Err(CtlOutput::usage(format!(
                    "Error: unknown option '{other}'\nUsage: rookery ctl generate_invite HOST [--reusable N] [--expires DURATION] [--roster-for USER]"
                )))
            }
        }
    }
    let data = data(env);
    let token = token::create(Handle::new(&data, token::MODULE), &invite).map_err(store_failed)?;
    Ok(show(server, &invite, &token))
}

/// `generate_invite_with_username USER HOST`: an account invitation for
/// one user name.
pub fn generate_invite_with_username(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    user: &str,
    host: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    if env
        .storage
        .user_exists(AccountKey::new(&host, &user))
        .map_err(db_failed)?
    {
        return Err(CtlOutput::failed(format!(
            "User {user}@{host} already exists"
        )));
    }
    let mut invite = Invite::new(Kind::Register, &host, expiry(server), 1);
    invite.account = Some(user);
    let data = data(env);
    let token = token::create(Handle::new(&data, token::MODULE), &invite).map_err(store_failed)?;
    Ok(show(server, &invite, &token))
}

/// `generate_password_reset USER HOST`: a link that sets a new password.
pub fn generate_password_reset(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    user: &str,
    host: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = existing_account(env, user, host)?;
    // Reset links are short-lived: one day at most.
    let mut invite = Invite::new(Kind::Reset, &host, expiry(server).min(86_400), 1);
    invite.account = Some(user);
    let data = data(env);
    let token = token::create(Handle::new(&data, token::MODULE), &invite).map_err(store_failed)?;
    Ok(show(server, &invite, &token))
}

/// `list_invites HOST`: one line per invitation, tab-separated: id,
/// valid|expired|used, created, expires, kind, inviter, account, uses
/// left/uses, used by.
pub fn list_invites(env: &CtlEnv, host: &str) -> Result<CtlOutput, CtlOutput> {
    let host = served_host(env, host)?;
    let data = data(env);
    let now = token::now();
    let mut rows = token::list(Handle::new(&data, token::MODULE), &host).map_err(store_failed)?;
    rows.sort_by_key(|(_, i)| i.created);
    let lines: Vec<String> = rows
        .iter()
        .map(|(hash, i)| {
            let state = match i.unusable(now) {
                None => "valid",
                Some(token::Invalid::Used) => "used",
                Some(_) => "expired",
            };
            let kind = match (i.kind, i.roster) {
                (Kind::Register, true) => "account_subscription",
                (Kind::Register, false) => "account_only",
                (Kind::Roster, _) => "roster_only",
                (Kind::Reset, _) => "reset",
            };
            let inviter = i
                .inviter
                .as_ref()
                .map(|u| format!("{u}@{}", i.host))
                .unwrap_or_else(|| i.host.clone());
            format!(
                "{}\t{state}\t{}\t{}\t{kind}\t{inviter}\t{}\t{}/{}\t{}",
                token::id_of_hash(hash),
                xep_support::date::xep0082(i.created as i64, 0),
                xep_support::date::xep0082(i.expires as i64, 0),
                i.account.as_deref().unwrap_or(""),
                i.uses_left,
                i.uses,
                i.used_by.join(",")
            )
        })
        .collect();
    Ok(CtlOutput::ok(lines.join("\n")))
}

/// `expire_invite_tokens USER HOST`: expire the usable invitations USER
/// made; prints how many.
pub fn expire_invite_tokens(env: &CtlEnv, user: &str, host: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    let data = data(env);
    let n = token::expire_where(Handle::new(&data, token::MODULE), &host, |_, i| {
        i.inviter.as_deref() == Some(user.as_str())
    })
    .map_err(store_failed)?;
    Ok(CtlOutput::ok(n.to_string()))
}

/// `cleanup_expired_invite_tokens`: delete expired and used-up
/// invitations on every host; prints how many.
pub fn cleanup_expired_invite_tokens(env: &CtlEnv) -> Result<CtlOutput, CtlOutput> {
    let data = data(env);
    let mut n = 0;
    for host in env.hosts() {
        n += token::cleanup(Handle::new(&data, token::MODULE), &host).map_err(store_failed)?;
    }
    Ok(CtlOutput::ok(n.to_string()))
}

/// `ban_account USER HOST REASON`: refuse its logins, end its sessions,
/// keep its data.
pub fn ban_account(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    user: &str,
    host: &str,
    reason: &str,
) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = existing_account(env, user, host)?;
    crate::auth::ban::ban(&data(env), &user, &host, reason).map_err(store_failed)?;
    // Banned first, so the kicked sessions cannot log in again.
    if let Some(server) = server {
        server.kick_user(&user, &host, "Account banned");
    }
    Ok(CtlOutput::ok(""))
}

/// `unban_account USER HOST`.
pub fn unban_account(env: &CtlEnv, user: &str, host: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    if crate::auth::ban::unban(&data(env), &user, &host).map_err(store_failed)? {
        Ok(CtlOutput::ok(""))
    } else {
        Err(CtlOutput::failed(format!(
            "User {user}@{host} is not banned"
        )))
    }
}

/// `get_ban_details USER HOST`: `reason`, `bandate` lines, or nothing.
pub fn get_ban_details(env: &CtlEnv, user: &str, host: &str) -> Result<CtlOutput, CtlOutput> {
    let (user, host) = account(env, user, host)?;
    Ok(CtlOutput::ok(
        match crate::auth::ban::banned(&data(env), &user, &host) {
            Some((at, reason)) => format!(
                "reason\t{reason}\nbandate\t{}",
                xep_support::date::xep0082(at as i64, 0)
            ),
            None => String::new(),
        },
    ))
}

/// `delete_old_users DAYS`: delete the accounts whose last session ended
/// more than DAYS days ago (mod_last's last activity) on every host.
/// Accounts with a session now, and accounts with no recorded logout
/// (never logged in since mod_last recorded it), are kept.
pub fn delete_old_users(
    env: &CtlEnv,
    server: Option<&Arc<dyn ServerControl>>,
    days: &str,
) -> Result<CtlOutput, CtlOutput> {
    let days: u64 = days.parse().map_err(|_| {
        CtlOutput::failed(format!(
            "Invalid number of days '{days}': expected a whole number"
        ))
    })?;
    let cutoff = token::now().saturating_sub(days.saturating_mul(86_400));
    let online: Vec<String> = server
        .map(|s| s.connected_users())
        .unwrap_or_default()
        .into_iter()
        .map(|full| full.split('/').next().unwrap_or("").to_string())
        .collect();
    let data = data(env);
    let last = Handle::new(&data, "mod_last");
    let mut deleted = Vec::new();
    for host in env.hosts() {
        for user in env.storage.list_users(&host).map_err(db_failed)? {
            let bare = format!("{user}@{host}");
            if online.contains(&bare) {
                continue;
            }
            let Ok(jid) = jid::BareJid::new(&bare) else {
                continue;
            };
            let logout = last
                .get(&jid, "logout")
                .map_err(store_failed)?
                .and_then(|v| String::from_utf8_lossy(&v).trim().parse::<u64>().ok());
            if logout.is_some_and(|t| t < cutoff)
                && env
                    .storage
                    .delete_user(AccountKey::new(&host, &user))
                    .map_err(db_failed)?
            {
                if let Some(server) = server {
                    server.kick_user(&user, &host, "Account removed");
                }
                deleted.push(bare);
            }
        }
    }
    Ok(CtlOutput::ok(format!(
        "Deleted {} users: [{}]",
        deleted.len(),
        deleted.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3600"), Some(3600));
        assert_eq!(parse_duration("30m"), Some(1800));
        assert_eq!(parse_duration("12h"), Some(43_200));
        assert_eq!(parse_duration("7d"), Some(604_800));
        assert_eq!(parse_duration("2w"), Some(1_209_600));
        assert_eq!(parse_duration("0"), None);
        assert_eq!(parse_duration("soon"), None);
        assert_eq!(parse_duration("5y"), None);
        assert_eq!(parse_duration(""), None);
    }
}
