//! `rookery ctl sql_migrate` and `rookery ctl migrate_db FROM TO`: the
//! PostgreSQL schema brought to this version, and everything copied from
//! one engine to the other (`sled`, the embedded database in `data_dir`,
//! or `sql`, the PostgreSQL database the `sql_*` options name).
//!
//! Invariants: `migrate_db` refuses while a server answers on the control
//! socket (its data would change under the copy), refuses a target that
//! holds data, and reports success only after `storage::transfer::copy`
//! counted both sides equal. Nothing is deleted from the source: switching
//! `default_db` is the administrator's step, and going back is a second
//! `migrate_db` the other way.

use std::sync::Arc;

use super::commands::CtlOutput;
use crate::config::Config;
use crate::storage::transfer::{self, Engine};
use crate::storage::{PgStorage, SledStorage};

/// The PostgreSQL options, or the error saying they are missing.
fn sql_options(config: &Config) -> Result<&crate::config::sql::SqlOptions, CtlOutput> {
    config.sql_options.as_ref().ok_or_else(|| {
        CtlOutput::failed(
            "no PostgreSQL database is configured: set the sql_* options (docs/configuration.md)",
        )
    })
}

fn open(config: &Config, which: &str) -> Result<(Arc<dyn Engine>, String), CtlOutput> {
    match which {
        "sled" | "mnesia" | "internal" => {
            let dir = config.data_dir.join("db");
            let place = crate::storage::ArchivePlacement::in_data_dir(
                &config.data_dir,
                config.archive_engine,
            );
            let db = SledStorage::open_with(&dir, Some(&place)).map_err(|e| {
                CtlOutput::failed(format!("cannot open the database at {}: {e}", dir.display()))
            })?;
            Ok((Arc::new(db), format!("sled ({})", dir.display())))
        }
        "sql" | "pgsql" => {
            let o = sql_options(config)?;
            let db = PgStorage::open(o).map_err(|e| {
                CtlOutput::failed(format!(
                    "cannot open the PostgreSQL database {}: {e}",
                    o.describe()
                ))
            })?;
            Ok((Arc::new(db), format!("PostgreSQL ({})", o.describe())))
        }
        other => Err(CtlOutput::usage(format!(
            "unknown database `{other}`: expected sled or sql\nUsage: rookery ctl migrate_db FROM TO"
        ))),
    }
}

/// Run one of this file's commands; `server_answers(cmd)` asks the
/// control socket.
pub fn run(
    config: &Config,
    name: &str,
    args: &[String],
    server_answers: impl Fn(&str) -> bool,
) -> CtlOutput {
    match (name, args) {
        ("sql_migrate", []) => {
            let o = match sql_options(config) {
                Ok(o) => o,
                Err(out) => return out,
            };
            match PgStorage::open(o) {
                Ok(_) => CtlOutput::ok(format!(
                    "The PostgreSQL schema of {} is at version {}",
                    o.describe(),
                    crate::storage::pgsql::schema::latest()
                )),
                Err(e) => CtlOutput::failed(format!(
                    "cannot migrate the PostgreSQL database {}: {e}",
                    o.describe()
                )),
            }
        }
        ("migrate_db", [from, to]) => {
            let norm = |s: &str| match s {
                "mnesia" | "internal" => "sled".to_string(),
                "pgsql" => "sql".to_string(),
                s => s.to_string(),
            };
            if norm(from) == norm(to) {
                return CtlOutput::usage(format!(
                    "FROM and TO are the same database ({from})\nUsage: rookery ctl migrate_db FROM TO"
                ));
            }
            if server_answers("status") {
                return CtlOutput::failed(
                    "the server is running: stop it first (`rookery ctl stop`), so that nothing changes during the copy",
                );
            }
            let (source, source_name) = match open(config, from) {
                Ok(x) => x,
                Err(out) => return out,
            };
            let (target, target_name) = match open(config, to) {
                Ok(x) => x,
                Err(out) => return out,
            };
            match transfer::copy(source.as_ref(), target.as_ref()) {
                Ok(counts) => CtlOutput::ok(format!(
                    "Copied {source_name} to {target_name}: {counts}. Both sides counted equal.\n\
                     The source is unchanged; set `default_db: {}` to serve from the copy.",
                    if norm(to) == "sql" { "sql" } else { "mnesia" }
                )),
                Err(e) => CtlOutput::failed(format!(
                    "copying {source_name} to {target_name} failed: {e}"
                )),
            }
        }
        _ => CtlOutput::usage(format!("bad arguments for {name}")),
    }
}
