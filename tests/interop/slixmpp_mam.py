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

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import uuid

import slixmpp

HARD_TIMEOUT = 60
STEP_TIMEOUT = 20
MECH = "SCRAM-SHA-256"
PAGE = 7


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Client(slixmpp.ClientXMPP):
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
        self.register_plugin("xep_0059")  # result set management
        self.register_plugin("xep_0313")  # message archive management
        self.register_plugin("xep_0359")  # stanza ids
        self.register_plugin("xep_0199")  # ping
        self.messages = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("failed_all_auth", self._on_fail)

    async def _on_start(self, _event):
        self.send_presence()
        await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=STEP_TIMEOUT)
        if not self.started.done():
            self.started.set_result(True)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    def _on_message(self, msg):
        # MAM results arrive as messages too; only live chats are queued.
        if msg["body"] and msg["type"] == "chat":
            self.messages.put_nowait(msg)

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)

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
        print(f"{len(sent)} messages delivered live with stanza ids", flush=True)

        fwd = await a.archive(with_jid=slixmpp.JID(bbare))
        bodies = [m["body"] for _, m in fwd]
        check(bodies == sent,
              f"forward paging of alice's archive: {len(bodies)} results, expected {len(sent)} in order")
        check(len({i for i, _ in fwd}) == len(fwd), "an archive id appears twice")
        check(all(m["to"].bare == bbare for _, m in fwd), "an archived message is not to bob")
        print(f"alice's archive paged forwards {PAGE} at a time: {len(fwd)} once each, in order", flush=True)

        back = await a.archive(with_jid=slixmpp.JID(bbare), reverse=True)
        check([m["body"] for _, m in back] == list(reversed(sent)),
              f"backward paging: {len(back)} results, expected {len(sent)} newest first")
        print(f"alice's archive paged backwards: {len(back)} once each, newest first", flush=True)

        theirs = await b.archive()
        check([m["body"] for _, m in theirs] == sent, "bob's archive differs from what he got")
        check([i for i, _ in theirs] == sids, "bob's archive ids differ from his stanza-ids")
        print("bob's archive ids are the stanza ids he was given", flush=True)
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
    p.add_argument("--count", type=int, default=40)
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
