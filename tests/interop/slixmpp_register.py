#!/usr/bin/env python3
"""Interop check: slixmpp's XEP-0077 plugin against Rookery's mod_register.

1. A client registers a new account in-band before authenticating (the
   `register` event on the `iq-register` stream feature), then logs in with it.
2. It changes its password with `change_password`; a second client logs in
   with the new password.
3. It cancels its registration with `cancel_registration`; a third login
   with the new password must fail.

Prints "INTEROP OK <user>" and exits 0 only if every step passed.

Usage: slixmpp_register.py --port PORT --jid JID --password PW --new-password PW2
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

HARD_TIMEOUT = 40


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port, register=False):
        super().__init__(jid, password)
        self.ssl_context = tls_context()
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        self.registered = False
        self.started = asyncio.get_running_loop().create_future()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0004")
        self.register_plugin("xep_0066")
        self.register_plugin("xep_0077")
        if register:
            self.add_event_handler("register", self._register)
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", self._on_fail)
        self.add_event_handler("failed_auth", self._on_fail)

    async def _register(self, form):
        if form.xml.find("{jabber:iq:register}query/{jabber:iq:register}username") is None:
            fail(f"no username field in the registration form: {form}")
        resp = self.Iq()
        resp["type"] = "set"
        resp["register"]["username"] = self.boundjid.user
        resp["register"]["password"] = self.password
        try:
            await resp.send(timeout=10)
            self.registered = True
        except IqError as e:
            fail(f"registration refused: {e.iq['error']['condition']}")

    def _on_start(self, _event):
        if not self.started.done():
            self.started.set_result(True)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"{self.boundjid.bare}: authentication failed"))

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, 15)


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


async def login_fails(args, password):
    c = Client(args.jid, password, args.host, args.port)
    try:
        await c.start()
    except (RuntimeError, asyncio.TimeoutError):
        return True
    finally:
        c.disconnect(wait=1)
    return False


async def run(args):
    a = Client(args.jid, args.password, args.host, args.port, register=True)
    await a.start()
    check(a.registered, "logged in without registering first")
    print(f"registered and logged in as {a.boundjid.full}", flush=True)

    await a["xep_0077"].change_password(args.new_password, timeout=10)
    b = Client(args.jid, args.new_password, args.host, args.port)
    await b.start()
    print("logged in with the changed password", flush=True)
    b.disconnect(wait=1)

    await a["xep_0077"].cancel_registration(timeout=10)
    await asyncio.sleep(0.5)
    check(await login_fails(args, args.new_password), "login still works after cancellation")
    print(f"INTEROP OK {a.boundjid.user}", flush=True)
    a.disconnect(wait=1)
    await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--new-password", required=True)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr)
    signal.alarm(HARD_TIMEOUT)
    try:
        asyncio.run(asyncio.wait_for(run(args), HARD_TIMEOUT - 2))
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001 - report anything as failure
        print(f"INTEROP FAIL: {type(e).__name__}: {e}", flush=True)
        raise SystemExit(1)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
