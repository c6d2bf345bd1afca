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

import asyncio
import uuid

from slixmpp.jid import JID

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port,
                         plugins=("xep_0030", "xep_0115", "xep_0060", "xep_0163", "xep_0172",
                                  "xep_0191", "xep_0199"))
        self.messages = asyncio.Queue()
        self.nicks = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.messages.put_nowait)
        self.add_event_handler("user_nick_publish", self.nicks.put_nowait)

    async def on_session(self):
        await self.get_roster(timeout=STEP_TIMEOUT)
        self.send_presence()

    async def start(self):
        await super().start(STEP_TIMEOUT)

    async def ping_server(self):
        await super().ping_server(STEP_TIMEOUT)

    async def next_message(self, pred, what):
        return await harness.next_matching(self.messages, pred, STEP_TIMEOUT,
                                           f"{self.boundjid.bare}: no {what}")

    async def bodies_for(self, seconds):
        return await harness.collect_for(self.messages, seconds, lambda m: bool(m["body"]))


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
        await harness.next_matching(
            b.nicks,
            lambda ev: ev["from"].bare == abare
            and ev["pubsub_event"]["items"]["item"]["nick"]["nick"] == nick,
            STEP_TIMEOUT, "bob never got alice's nick event")
        harness.step(f"bob got alice's nick {nick} by PEP")

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
        harness.step("blocking enforced both ways")

        await a.plugin["xep_0191"].unblock(JID(bbare), timeout=STEP_TIMEOUT)
        blocked = await a.plugin["xep_0191"].get_blocked_jids(timeout=STEP_TIMEOUT)
        check(not blocked, f"blocklist not empty after unblock: {blocked}")
        b.send_message(mto=abare, mbody=f"unblocked {token}", mtype="chat")
        m = await a.next_message(lambda m: m["body"] == f"unblocked {token}", "bob's message after unblock")
        check(m["from"].bare == bbare, f"from {m['from']}")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
