#!/usr/bin/env python3
"""Interop check: slixmpp's XEP-0077 plugin against Rookery's mod_register.

1. A client registers a new account in-band before authenticating (the
   `register` event on the `iq-register` stream feature), then logs in with it.
2. It changes its password with `change_password`; a second client logs in
   with the new password.
3. It cancels its registration with `cancel_registration`; a third login
   with the new password must fail.

Prints "INTEROP OK <user>" and exits 0 only if every step passed (see
harness.py for the exit contract and timeouts).

Usage: slixmpp_register.py --port PORT --jid JID --password PW --new-password PW2
"""

import asyncio

from slixmpp.exceptions import IqError

import harness
from harness import check, fail

HARD_TIMEOUT = 40


class Client(harness.Client):
    def __init__(self, jid, password, host, port, register=False):
        # No forced mechanism: the server's default choice.
        super().__init__(jid, password, host, port, mech=None,
                         plugins=("xep_0030", "xep_0004", "xep_0066", "xep_0077"))
        self.registered = False
        if register:
            self.add_event_handler("register", self._register)

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
    harness.step(f"registered and logged in as {a.boundjid.full}")

    await a["xep_0077"].change_password(args.new_password, timeout=10)
    b = Client(args.jid, args.new_password, args.host, args.port)
    await b.start()
    harness.step("logged in with the changed password")
    b.disconnect(wait=1)

    await a["xep_0077"].cancel_registration(timeout=10)
    await asyncio.sleep(0.5)
    check(await login_fails(args, args.new_password), "login still works after cancellation")
    harness.ok(a.boundjid.user)
    await harness.disconnect_all(a)


if __name__ == "__main__":
    p = harness.parser(__doc__)
    p.add_argument("--new-password", required=True)
    harness.main(run, p, HARD_TIMEOUT)
