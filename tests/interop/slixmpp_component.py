#!/usr/bin/env python3
"""Interop check: a slixmpp XEP-0114 component (slixmpp.ComponentXMPP)
against a running Rookery server, talking to a slixmpp client.

The component connects to the server's ejabberd_service listener and
hand-shakes with its secret. It echoes every chat message back and answers
disco#info with a gateway identity (slixmpp's own XEP-0030 plugin). A
slixmpp client (STARTTLS, SCRAM-SHA-256) sends a message to a JID at the
component, must get the echo back from that JID, and must see the gateway
identity in disco#info of the component's domain.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout (see harness.py).

Usage: slixmpp_component.py --port C2S --service-port PORT --jid JID
       --password PW --component DOMAIN --secret SECRET
"""

import asyncio
import uuid

import slixmpp

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


class Echo(slixmpp.ComponentXMPP):
    def __init__(self, domain, secret, host, port):
        super().__init__(domain, secret, host, port)
        self.register_plugin("xep_0030")
        self["xep_0030"].add_identity(category="gateway", itype="test", name="Echo gateway")
        self.ready = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", lambda _e: harness.settle(self.ready))
        self.add_event_handler("message", self._message)

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(f"echo: {msg['body']}").send()


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port, plugins=("xep_0030",))
        self.messages = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)

    async def on_session(self):
        self.send_presence()


async def run(args):
    token = uuid.uuid4().hex[:8]
    comp = Echo(args.component, args.secret, args.host, args.service_port)
    comp.connect(args.host, args.service_port)
    await asyncio.wait_for(comp.ready, STEP_TIMEOUT)

    client = Client(args.jid, args.password, args.host, args.port)
    await client.start(STEP_TIMEOUT)
    try:
        peer = f"echo@{args.component}"
        client.send_message(mto=peer, mbody=f"ping {token}", mtype="chat")
        msg = await asyncio.wait_for(client.messages.get(), STEP_TIMEOUT)
        check(msg["body"] == f"echo: ping {token}", f"wrong echo: {msg['body']!r}")
        check(msg["from"].bare == peer, f"echo from {msg['from']}, not {peer}")

        info = await client["xep_0030"].get_info(jid=args.component, timeout=STEP_TIMEOUT)
        ids = info["disco_info"]["identities"]
        check(any(i[0] == "gateway" and i[1] == "test" for i in ids),
              f"no gateway identity in disco#info of {args.component}: {ids}")
        harness.ok(token)
    finally:
        await harness.disconnect_all(client, comp)


if __name__ == "__main__":
    p = harness.parser(__doc__)
    p.add_argument("--service-port", type=int, required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--secret", required=True)
    harness.main(run, p, HARD_TIMEOUT)
