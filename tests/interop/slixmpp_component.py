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
on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_component.py --port C2S --service-port PORT --jid JID
       --password PW --component DOMAIN --secret SECRET
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
STEP_TIMEOUT = 15


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Echo(slixmpp.ComponentXMPP):
    def __init__(self, domain, secret, host, port):
        super().__init__(domain, secret, host, port)
        self.register_plugin("xep_0030")
        self["xep_0030"].add_identity(category="gateway", itype="test", name="Echo gateway")
        self.ready = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", self._message)

    def _start(self, _event):
        if not self.ready.done():
            self.ready.set_result(True)

    def _message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply(f"echo: {msg['body']}").send()


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.messages = asyncio.Queue()
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._start)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    def _start(self, _event):
        self.send_presence()
        if not self.started.done():
            self.started.set_result(True)


async def run(args):
    token = uuid.uuid4().hex[:8]
    comp = Echo(args.component, args.secret, args.host, args.service_port)
    comp.connect(args.host, args.service_port)
    await asyncio.wait_for(comp.ready, STEP_TIMEOUT)

    client = Client(args.jid, args.password)
    client.connect(args.host, args.port)
    await asyncio.wait_for(client.started, STEP_TIMEOUT)
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
        print(f"INTEROP OK {token}", flush=True)
    finally:
        for x in (client, comp):
            try:
                x.disconnect(wait=1)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--service-port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--component", required=True)
    p.add_argument("--secret", required=True)
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
