#!/usr/bin/env python3
"""Interop check: XEP-0198 stream management (with resumption after the TCP
connection is dropped), XEP-0280 message carbons and XEP-0352 client state
indication with slixmpp clients against a running Rookery server.

alice connects twice ("phone" with slixmpp's xep_0198 plugin, resumption on;
"desk" without it), bob once. Both alice resources enable carbons with
slixmpp's xep_0280 plugin. Checks:
- slixmpp enables stream management and gets a resumption id;
- bob -> alice/phone: desk gets a carbon_received whose inner message is
  bob's; alice/phone -> bob: desk gets a carbon_sent;
- desk says it is inactive (xep_0352) and still gets bob's message at once;
- phone's TCP connection is cut (no stream close, no ack), bob sends two
  messages meanwhile, slixmpp reconnects and resumes (session_resumed, not a
  new session, same full JID) and phone gets each message exactly once.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_session.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
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
MECH = "SCRAM-SHA-256"


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port, sm):
        super().__init__(jid, password, sasl_mech=MECH)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0280")
        self.register_plugin("xep_0352")
        if sm:
            self.register_plugin("xep_0198")
        self.messages = asyncio.Queue()
        self.carbons_received = asyncio.Queue()
        self.carbons_sent = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.sm_enabled = loop.create_future()
        self.resumed = None
        self.starts = 0
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("session_resumed", self._on_resumed)
        self.add_event_handler("sm_enabled", self._on_sm_enabled)
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))
        self.add_event_handler("carbon_received", lambda m: self.carbons_received.put_nowait(m))
        self.add_event_handler("carbon_sent", lambda m: self.carbons_sent.put_nowait(m))
        self.add_event_handler("failed_all_auth", self._on_fail)

    async def _on_start(self, _event):
        self.starts += 1
        try:
            self.send_presence()
            await self.plugin["xep_0280"].enable(timeout=STEP_TIMEOUT)
            if not self.started.done():
                self.started.set_result(True)
        except Exception as e:  # noqa: BLE001
            if not self.started.done():
                self.started.set_exception(e)

    def _on_resumed(self, _event):
        if self.resumed is not None and not self.resumed.done():
            self.resumed.set_result(True)

    def _on_sm_enabled(self, stanza):
        if not self.sm_enabled.done():
            self.sm_enabled.set_result(stanza)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError("authentication failed"))

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)

    async def ping_server(self):
        await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=STEP_TIMEOUT)

    async def next(self, queue, what):
        try:
            return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.boundjid.full}: no {what}")

    async def bodies_for(self, seconds):
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return got
            try:
                msg = await asyncio.wait_for(self.messages.get(), left)
            except asyncio.TimeoutError:
                return got
            if msg["type"] == "error":
                fail(f"{self.boundjid} got an error message: {msg}")
            if msg["body"] and not msg["carbon_received"] and not msg["carbon_sent"]:
                got.append(msg["body"])


async def run(args):
    host, port = args.host, args.port
    phone = Client(args.jid1 + "/phone", args.password1, host, port, sm=True)
    desk = Client(args.jid1 + "/desk", args.password1, host, port, sm=False)
    bob = Client(args.jid2 + "/b", args.password2, host, port, sm=False)
    token = uuid.uuid4().hex
    try:
        await asyncio.gather(phone.start(), desk.start(), bob.start())
        enabled = await asyncio.wait_for(phone.sm_enabled, STEP_TIMEOUT)
        check(bool(enabled["id"]), f"no resumption id in {enabled}")
        check(phone.plugin["xep_0198"].sm_id == enabled["id"], "slixmpp kept no sm_id")
        print(f"stream management on, id {enabled['id']}", flush=True)

        # Carbons: received.
        body = f"to phone {token}"
        bob.send_message(mto=phone.boundjid.full, mbody=body, mtype="chat")
        m = await phone.next(phone.messages, "message from bob")
        check(m["body"] == body, f"phone got {m['body']!r}")
        c = await desk.next(desk.carbons_received, "carbon_received")
        inner = c["carbon_received"]
        check(inner["body"] == body and inner["from"].bare == bob.boundjid.bare,
              f"bad received carbon: {c}")
        # Carbons: sent.
        body = f"from phone {token}"
        phone.send_message(mto=bob.boundjid.bare, mbody=body, mtype="chat")
        c = await desk.next(desk.carbons_sent, "carbon_sent")
        inner = c["carbon_sent"]
        check(inner["body"] == body and inner["to"].bare == bob.boundjid.bare,
              f"bad sent carbon: {c}")
        print("carbons received and sent", flush=True)

        # CSI: an inactive client still gets messages at once.
        check(desk.plugin["xep_0352"].enabled, "slixmpp saw no csi stream feature")
        desk.plugin["xep_0352"].send_inactive()
        await desk.ping_server()
        body = f"to desk {token}"
        bob.send_message(mto=desk.boundjid.full, mbody=body, mtype="chat")
        got = await desk.bodies_for(2)
        check(got == [body], f"inactive desk got {got}")
        desk.plugin["xep_0352"].send_active()
        print("inactive client got its message", flush=True)

        # Stream management: cut phone's connection, queue messages, resume.
        await phone.ping_server()
        await phone.bodies_for(0.5)
        phone.resumed = asyncio.get_running_loop().create_future()
        full = phone.boundjid.full
        phone.abort()
        await asyncio.sleep(0.5)
        sent = [f"while away {i} {token}" for i in range(2)]
        for b in sent:
            bob.send_message(mto=full, mbody=b, mtype="chat")
        await bob.ping_server()
        phone.connect(host, port)
        try:
            await asyncio.wait_for(phone.resumed, STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail("slixmpp did not resume the session")
        check(phone.starts == 1, "a new session was started instead of a resumption")
        check(phone.boundjid.full == full, f"resumed as {phone.boundjid.full}, not {full}")
        await phone.ping_server()
        got = await phone.bodies_for(2)
        check(sorted(got) == sorted(sent), f"after resuming got {got}, expected {sent} once each")
        print("resumed after a dropped connection; queued messages delivered once", flush=True)
        print(f"INTEROP OK {token}", flush=True)
    finally:
        for c in (phone, desk, bob):
            try:
                c.disconnect(wait=1)
            except Exception:  # noqa: BLE001
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
    signal.alarm(HARD_TIMEOUT)
    try:
        asyncio.run(asyncio.wait_for(run(args), HARD_TIMEOUT - 2))
    except SystemExit:
        raise
    except BaseException as e:  # noqa: BLE001
        print(f"INTEROP FAIL: {type(e).__name__}: {e}", flush=True)
        raise SystemExit(1)
    raise SystemExit(0)


if __name__ == "__main__":
    main()
