#!/usr/bin/env python3
"""Interop check: XEP-0191 blocking and XEP-0163 PEP publish/notify with
slixmpp's own plugins (xep_0191, xep_0163/xep_0172 with xep_0115 caps)
against a running Rookery server. The two accounts are already subscribed
to each other (set up by the Rust test).

PEP: bob's client announces `http://jabber.org/protocol/nick+notify`
through its entity capabilities (slixmpp computes and sends the caps hash
and answers the server's disco#info query); alice publishes her nickname
with xep_0172; bob must receive the `user_nick_publish` event with it.

Blocking: alice blocks bob with xep_0191; her blocklist must then hold bob;
bob's chat message must come back as an error (service-unavailable) and
alice must not receive it; alice's message to bob must come back as
not-acceptable. After unblocking, bob's message reaches alice.

Prints "INTEROP OK <token>" and exits 0 only if every check passed.

Usage: slixmpp_blocking_pep.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import uuid

import slixmpp
from slixmpp.jid import JID

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        for p in ("xep_0030", "xep_0115", "xep_0060", "xep_0163", "xep_0172", "xep_0191", "xep_0199"):
            self.register_plugin(p)
        self.messages = asyncio.Queue()
        self.nicks = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("message_error", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("user_nick_publish", lambda m: self.nicks.put_nowait(m))
        self.add_event_handler("failed_all_auth", self._on_fail)

    async def _on_start(self, _event):
        try:
            await self.get_roster(timeout=STEP_TIMEOUT)
            self.send_presence()
            if not self.started.done():
                self.started.set_result(True)
        except Exception as e:  # noqa: BLE001 - reported through the future
            if not self.started.done():
                self.started.set_exception(e)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)

    async def ping_server(self):
        await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=STEP_TIMEOUT)

    async def next_message(self, pred, what):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                fail(f"{self.boundjid.bare}: no {what}")
            try:
                m = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                fail(f"{self.boundjid.bare}: no {what}")
            if pred(m):
                return m

    async def bodies_for(self, seconds):
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                m = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                break
            if m["body"]:
                got.append(m)
        return got


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        abare, bbare = a.boundjid.bare, b.boundjid.bare
        token = uuid.uuid4().hex
        # Let the server learn bob's caps (it queries slixmpp's disco#info).
        await b.ping_server()
        await asyncio.sleep(0.5)

        # --- PEP: alice's nickname reaches bob through +notify caps.
        nick = f"Ally-{token[:8]}"
        await a.plugin["xep_0172"].publish_nick(nick, timeout=STEP_TIMEOUT)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                fail("bob never got alice's nick event")
            try:
                ev = await asyncio.wait_for(b.nicks.get(), left)
            except asyncio.TimeoutError:
                fail("bob never got alice's nick event")
            if ev["from"].bare == abare and ev["pubsub_event"]["items"]["item"]["nick"]["nick"] == nick:
                break
        print(f"bob got alice's nick {nick} by PEP", flush=True)

        # --- Blocking.
        await a.plugin["xep_0191"].block(JID(bbare), timeout=STEP_TIMEOUT)
        blocked = await a.plugin["xep_0191"].get_blocked_jids(timeout=STEP_TIMEOUT)
        check(JID(bbare) in blocked, f"blocklist {blocked} lacks {bbare}")
        b.send_message(mto=abare, mbody=f"blocked {token}", mtype="chat")
        err = await b.next_message(lambda m: m["type"] == "error", "error for a message to a blocker")
        check(err["error"]["condition"] == "service-unavailable", f"bob's error: {err}")
        a.send_message(mto=bbare, mbody=f"to-blocked {token}", mtype="chat")
        err = await a.next_message(lambda m: m["type"] == "error", "error for a message to a blocked JID")
        check(err["error"]["condition"] == "not-acceptable", f"alice's error: {err}")
        check("urn:xmpp:blocking:errors" in str(err), f"no <blocked/> payload: {err}")
        await b.ping_server()
        got = [m["body"] for m in await a.bodies_for(0.5) if m["type"] != "error"]
        check(not any(token in g for g in got if g.startswith("blocked")), f"alice got bob's message: {got}")
        print("blocking enforced both ways", flush=True)

        await a.plugin["xep_0191"].unblock(JID(bbare), timeout=STEP_TIMEOUT)
        blocked = await a.plugin["xep_0191"].get_blocked_jids(timeout=STEP_TIMEOUT)
        check(not blocked, f"blocklist not empty after unblock: {blocked}")
        b.send_message(mto=abare, mbody=f"unblocked {token}", mtype="chat")
        m = await a.next_message(lambda m: m["body"] == f"unblocked {token}", "bob's message after unblock")
        check(m["from"].bare == bbare, f"from {m['from']}")
        print(f"INTEROP OK {token}", flush=True)
    finally:
        for c in (a, b):
            try:
                c.disconnect(wait=1)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid1", required=True)
    p.add_argument("--password1", required=True)
    p.add_argument("--jid2", required=True)
    p.add_argument("--password2", required=True)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
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
