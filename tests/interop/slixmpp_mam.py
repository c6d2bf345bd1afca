#!/usr/bin/env python3
"""Interop check: XEP-0313 message archive paging with XEP-0059 (RSM),
using slixmpp's own xep_0313 and xep_0059 plugins against a running Rookery
server.

Alice and bob connect over STARTTLS (self-signed certificate, verification
off) with SCRAM-SHA-256 and send presence. Alice sends bob N chat messages;
bob must receive them all. Then alice pages through her archive with bob
(`with` = bob's bare JID) with slixmpp's MAM iterator, 7 per page, forwards
and backwards (`reverse`: RSM <before/>), and bob pages through his without
`with`: every message must appear exactly once, in the order sent, and each
result's stanza must be the message sent. Bob's results carry the ids of
the <stanza-id/> he was given with each live message.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_mam.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW [--count N]
"""

import asyncio
import uuid

import slixmpp

import harness
from harness import check, fail

HARD_TIMEOUT = 60
STEP_TIMEOUT = 20
PAGE = 7


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port, plugins=(
            "xep_0059",  # result set management
            "xep_0313",  # message archive management
            "xep_0359",  # stanza ids
            "xep_0199",  # ping
        ))
        self.messages = asyncio.Queue()
        self.add_event_handler("message", self._on_message)

    async def on_session(self):
        self.send_presence()
        await self.ping_server(STEP_TIMEOUT)

    def _on_message(self, msg):
        # MAM results arrive as messages too; only live chats are queued.
        if msg["body"] and msg["type"] == "chat":
            self.messages.put_nowait(msg)

    async def start(self):
        await super().start(STEP_TIMEOUT)

    async def archive(self, with_jid=None, reverse=False):
        """(result id, forwarded message) of every archived message, paging
        PAGE at a time with slixmpp's iterator."""
        out = []
        it = self.plugin["xep_0313"].iterate(
            with_jid=with_jid, reverse=reverse, rsm={"max": PAGE}
        )
        async for res in it:
            fwd = res["mam_result"]["forwarded"]["stanza"]
            out.append((res["mam_result"]["id"], fwd))
            if len(out) > 10_000:
                fail("archive iteration does not end")
        return out


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        bbare = b.boundjid.bare
        token = uuid.uuid4().hex[:8]
        sent = [f"mam {token} #{i} <&>" for i in range(args.count)]
        for body in sent:
            a.send_message(mto=b.boundjid.full, mbody=body, mtype="chat")
        got, sids = [], []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while len(got) < len(sent) and loop.time() < deadline:
            try:
                m = await asyncio.wait_for(b.messages.get(), deadline - loop.time())
            except asyncio.TimeoutError:
                break
            got.append(m["body"])
            sids.append(m["stanza_id"]["id"])
        check(got == sent, f"bob got {len(got)} of {len(sent)} live messages, or out of order")
        check(all(sids), "a live message without a stanza-id")
        harness.step(f"{len(sent)} messages delivered live with stanza ids")

        fwd = await a.archive(with_jid=slixmpp.JID(bbare))
        bodies = [m["body"] for _, m in fwd]
        check(bodies == sent,
              f"forward paging of alice's archive: {len(bodies)} results, expected {len(sent)} in order")
        check(len({i for i, _ in fwd}) == len(fwd), "an archive id appears twice")
        check(all(m["to"].bare == bbare for _, m in fwd), "an archived message is not to bob")
        harness.step(f"alice's archive paged forwards {PAGE} at a time: {len(fwd)} once each, in order")

        back = await a.archive(with_jid=slixmpp.JID(bbare), reverse=True)
        check([m["body"] for _, m in back] == list(reversed(sent)),
              f"backward paging: {len(back)} results, expected {len(sent)} newest first")
        harness.step(f"alice's archive paged backwards: {len(back)} once each, newest first")

        theirs = await b.archive()
        check([m["body"] for _, m in theirs] == sent, "bob's archive differs from what he got")
        check([i for i, _ in theirs] == sids, "bob's archive ids differ from his stanza-ids")
        harness.step("bob's archive ids are the stanza ids he was given")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    p = harness.parser(__doc__, accounts=2)
    p.add_argument("--count", type=int, default=40)
    harness.main(run, p, HARD_TIMEOUT)
