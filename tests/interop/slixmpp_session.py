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

import asyncio
import uuid

import harness
from harness import check, fail

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


class Client(harness.Client):
    def __init__(self, jid, password, host, port, sm):
        plugins = ("xep_0199", "xep_0280", "xep_0352") + (("xep_0198",) if sm else ())
        super().__init__(jid, password, host, port, plugins=plugins)
        self.messages = asyncio.Queue()
        self.carbons_received = asyncio.Queue()
        self.carbons_sent = asyncio.Queue()
        self.sm_enabled = asyncio.get_running_loop().create_future()
        self.resumed = None
        self.starts = 0
        self.add_event_handler("session_resumed", self._on_resumed)
        self.add_event_handler("sm_enabled", lambda stanza: harness.settle(self.sm_enabled, stanza))
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("carbon_received", self.carbons_received.put_nowait)
        self.add_event_handler("carbon_sent", self.carbons_sent.put_nowait)

    async def on_session(self):
        self.starts += 1
        self.send_presence()
        await self.plugin["xep_0280"].enable(timeout=STEP_TIMEOUT)

    def _on_resumed(self, _event):
        if self.resumed is not None:
            harness.settle(self.resumed)

    async def start(self):
        await super().start(STEP_TIMEOUT)

    async def ping_server(self):
        await super().ping_server(STEP_TIMEOUT)

    async def next(self, queue, what):
        try:
            return await asyncio.wait_for(queue.get(), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.boundjid.full}: no {what}")

    def _live_body(self, msg):
        if msg["type"] == "error":
            fail(f"{self.boundjid} got an error message: {msg}")
        return bool(msg["body"]) and not msg["carbon_received"] and not msg["carbon_sent"]

    async def bodies_for(self, seconds):
        got = await harness.collect_for(self.messages, seconds, self._live_body)
        return [m["body"] for m in got]


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
        harness.step(f"stream management on, id {enabled['id']}")

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
        harness.step("carbons received and sent")

        # CSI: an inactive client still gets messages at once.
        check(desk.plugin["xep_0352"].enabled, "slixmpp saw no csi stream feature")
        desk.plugin["xep_0352"].send_inactive()
        await desk.ping_server()
        body = f"to desk {token}"
        bob.send_message(mto=desk.boundjid.full, mbody=body, mtype="chat")
        got = await desk.bodies_for(2)
        check(got == [body], f"inactive desk got {got}")
        desk.plugin["xep_0352"].send_active()
        harness.step("inactive client got its message")

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
        harness.step("resumed after a dropped connection; queued messages delivered once")
        harness.ok(token)
    finally:
        await harness.disconnect_all(phone, desk, bob)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
