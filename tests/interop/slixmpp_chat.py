#!/usr/bin/env python3
"""Interop check: two slixmpp clients chat through a running Rookery server.

Both clients connect over STARTTLS (certificate verification disabled: the
server uses a self-signed certificate) and authenticate with SCRAM-SHA-256
(forced). The first sends a message with a unique body to the second, which
checks the body and the sender's full JID and replies; the first checks the
reply. Prints "INTEROP OK <token>" and exits 0 only if every check passed;
exits 1 on any failure and is killed by SIGALRM after a hard timeout
(see harness.py).

Usage: slixmpp_chat.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import asyncio
import uuid

import harness
from harness import check, fail

HARD_TIMEOUT = 30


class Client(harness.Client):
    """Queues every message it receives."""

    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port)
        self.messages = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)

    async def on_session(self):
        self.send_presence()

    async def start(self):
        await super().start()
        self.check_mech()
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


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        harness.step(f"logged in as {a.boundjid.full} and {b.boundjid.full}")

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
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
