#!/usr/bin/env python3
"""Interop check: two slixmpp clients chat through a running Rookery server.

Both clients connect over STARTTLS (certificate verification disabled: the
server uses a self-signed certificate) and authenticate with SCRAM-SHA-256
(forced). The first sends a message with a unique body to the second, which
checks the body and the sender's full JID and replies; the first checks the
reply. Prints "INTEROP OK <token>" and exits 0 only if every check passed;
exits 1 on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_chat.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import uuid

import slixmpp

HARD_TIMEOUT = 30
MECH = "SCRAM-SHA-256"


class Client(slixmpp.ClientXMPP):
    """A slixmpp client restricted to STARTTLS + SCRAM-SHA-256."""

    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, sasl_mech=MECH)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        self.messages = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_all_auth", self._on_fail)
        self.add_event_handler("failed_auth", self._on_fail)

    def _on_start(self, _event):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"{self.boundjid.bare}: authentication failed"))

    def _on_message(self, msg):
        self.messages.put_nowait(msg)

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, 15)
        mech = self.plugin["feature_mechanisms"].mech
        check(mech is not None and mech.name == MECH,
              f"{self.boundjid.bare} authenticated with {mech and mech.name}, not {MECH}")
        check("starttls" in self.features, f"{self.boundjid.bare}: STARTTLS was not negotiated")
        check(bool(self.boundjid.resource), f"no resource bound: {self.boundjid}")

    async def next_chat(self):
        """Next chat/normal message with a body (errors fail the test)."""
        while True:
            msg = await asyncio.wait_for(self.messages.get(), 10)
            if msg["type"] == "error":
                fail(f"{self.boundjid} got an error message: {msg}")
            if msg["body"]:
                return msg


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        print(f"logged in as {a.boundjid.full} and {b.boundjid.full}", flush=True)

        token = uuid.uuid4().hex
        body = f"hello from slixmpp {token} <&> ünïcødé"
        a.send_message(mto=b.boundjid.full, mbody=body, mtype="chat")
        msg = await b.next_chat()
        check(msg["body"] == body, f"body mismatch: {msg['body']!r} != {body!r}")
        check(msg["from"].full == a.boundjid.full,
              f"from mismatch: {msg['from'].full} != {a.boundjid.full}")
        check(msg["type"] == "chat", f"type mismatch: {msg['type']}")

        reply = f"reply {token}"
        b.send_message(mto=msg["from"], mbody=reply, mtype="chat")
        msg = await a.next_chat()
        check(msg["body"] == reply, f"reply mismatch: {msg['body']!r}")
        check(msg["from"].full == b.boundjid.full,
              f"reply from mismatch: {msg['from'].full} != {b.boundjid.full}")
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
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr)
    # Hard backstop: SIGALRM's default action terminates the process.
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
