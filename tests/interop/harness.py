"""The shared harness of the slixmpp interop scripts in this folder: their
command line, their timeouts, their checks and a STARTTLS client to build on.

Every script is a small `run(args)` coroutine plus `harness.main(...)`, and
follows the contract the Rust tests (`tests/common/interop.rs`) rely on:

- it prints "INTEROP OK <token>" and exits 0 only if every check passed;
- any failed check, exception or timeout prints one "INTEROP FAIL: <what>"
  line and exits 1;
- `run` is cancelled after `hard_timeout - 2` seconds (reported as a
  failure), and SIGALRM's default action kills the process at
  `hard_timeout` seconds if even that hangs.

Clients connect over STARTTLS only (no direct TLS, no plaintext) with
certificate verification off: the test servers use self-signed
certificates. Scripts are run as `python3 tests/interop/NAME.py`, so this
module is importable as `harness` (Python puts the script's folder first on
`sys.path`).
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import slixmpp

DEFAULT_HOST = "127.0.0.1"
MECH = "SCRAM-SHA-256"


def fail(what):
    """Report a failed check and end the script with status 1."""
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


def check(cond, what):
    if not cond:
        fail(what)


def ok(token):
    print(f"INTEROP OK {token}", flush=True)


def step(what):
    """A progress line for the test's log."""
    print(what, flush=True)


def tls_context():
    """TLS without certificate verification (self-signed test certificates)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def settle(fut, value=True):
    if not fut.done():
        fut.set_result(value)


def settle_error(fut, exc):
    if not fut.done():
        fut.set_exception(exc)


class Client(slixmpp.ClientXMPP):
    """A slixmpp client restricted to STARTTLS (and, unless `mech` is None,
    to one SASL mechanism). `start()` connects and waits until
    `on_session()` (override it: send presence, fetch the roster...) has run
    after session_start; an authentication failure or an exception in
    `on_session()` makes `start()` raise."""

    def __init__(self, jid, password, host, port, mech=MECH, plugins=()):
        if mech is None:
            super().__init__(jid, password)
        else:
            super().__init__(jid, password, sasl_mech=mech)
        self.ssl_context = tls_context()
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        for p in plugins:
            self.register_plugin(p)
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._on_session_start)
        self.add_event_handler("failed_all_auth", self._on_auth_failed)
        self.add_event_handler("failed_auth", self._on_auth_failed)

    async def on_session(self):
        """Runs once a session started, before `start()` returns."""

    async def _on_session_start(self, _event):
        try:
            await self.on_session()
            settle(self.started)
        except Exception as e:  # noqa: BLE001 - reported through start()
            settle_error(self.started, e)

    def _on_auth_failed(self, _event):
        settle_error(self.started, RuntimeError(f"{self.boundjid.bare}: authentication failed"))

    async def start(self, timeout=15):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, timeout)

    async def ping_server(self, timeout=15):
        """XEP-0199 ping of the server (needs the xep_0199 plugin): everything
        sent before it has been handled once it returns."""
        await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=timeout)

    def check_mech(self, mech=MECH):
        used = self.plugin["feature_mechanisms"].mech
        check(used is not None and used.name == mech,
              f"{self.boundjid.bare} authenticated with {used and used.name}, not {mech}")


async def next_matching(queue, pred, timeout, what):
    """The first item of `queue` within `timeout` seconds for which `pred`
    holds (others are dropped); fails with `what` when none comes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            fail(what)
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            fail(what)
        if pred(item):
            return item


async def collect_for(queue, seconds, keep=lambda _item: True):
    """The items of `queue` that arrive within `seconds` and that `keep`
    accepts (`keep` may call `fail` to refuse an item outright)."""
    got = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        left = deadline - loop.time()
        if left <= 0:
            return got
        try:
            item = await asyncio.wait_for(queue.get(), left)
        except asyncio.TimeoutError:
            return got
        if keep(item):
            got.append(item)


async def disconnect_all(*clients):
    """Best-effort disconnect of every client (None entries skipped)."""
    for c in clients:
        if c is None:
            continue
        try:
            c.disconnect(wait=1)
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
    await asyncio.sleep(0.2)


def parser(doc, accounts=1):
    """The common command line: --host, --port, --debug, and the accounts'
    JIDs and passwords (`--jid/--password` for one, `--jid1/--password1
    --jid2/--password2` for two)."""
    p = argparse.ArgumentParser(description=doc)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--debug", action="store_true")
    if accounts == 1:
        p.add_argument("--jid", required=True)
        p.add_argument("--password", required=True)
    else:
        for i in range(1, accounts + 1):
            p.add_argument(f"--jid{i}", required=True)
            p.add_argument(f"--password{i}", required=True)
    return p


def main(run, p, hard_timeout):
    """Parse the command line, run `run(args)` under the timeouts and exit
    with the contract's status."""
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr)
    # Hard backstop: SIGALRM's default action terminates the process.
    signal.alarm(hard_timeout)
    try:
        asyncio.run(asyncio.wait_for(run(args), hard_timeout - 2))
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report anything as failure
        print(f"INTEROP FAIL: {type(e).__name__}: {e}", flush=True)
        raise SystemExit(1)
    raise SystemExit(0)
