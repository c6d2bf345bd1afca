# Sourced by the bench scripts (archive.sh, archive-restarts.sh, modules.sh,
# login-modes.sh): the embedded default module list and the benchmark
# server configuration they share. Needs ROOT (the repository) set.
#
# Invariants: the module list is read from src/config/default.yml itself, so
# "default" in a benchmark is always what a new user runs; the configuration
# listens on 127.0.0.1 port 0 (the script reads the bound port from the
# server's output), requires STARTTLS, and lifts the per-user session and
# offline limits that a load generator's accounts would otherwise hit.

# The `modules:` section of the embedded default configuration (its body,
# indented as in the file).
default_modules() {
  awk '/^modules:/ {on=1; next} on && /^[^ #]/ {on=0} on' "$ROOT/src/config/default.yml"
}

# bench_yaml FILE DATA_DIR MODULES [ARCHIVE_ENGINE]: write the configuration.
bench_yaml() {
  cat >"$1" <<YML
hosts: [localhost]
loglevel: warning
data_dir: $2
${4:+archive_engine: $4}
listen:
  - port: 0
    ip: 127.0.0.1
    module: ejabberd_c2s
    starttls_required: true
shaper_rules:
  max_user_sessions: infinity
  max_user_offline_messages: infinity
modules:
$3
YML
}
