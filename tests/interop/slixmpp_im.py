#!/usr/bin/env python3
"""Interop check: RFC 6121 subscriptions, presence and offline messages with
slixmpp clients against a running Rookery server.

Both clients connect over STARTTLS (certificate verification disabled: the
server uses a self-signed certificate) with SCRAM-SHA-256, fetch the roster
(slixmpp uses roster versioning when the server offers it) and send initial
presence. slixmpp's default subscription handling is on (auto_authorize and
auto_subscribe): alice asks to subscribe to bob, bob's client approves and
asks back, alice's client approves. The script checks that both rosters end
in subscription "both" and that each client sees the other come online
(`got_online`). Then bob disconnects (alice must see `got_offline`), alice
sends bob a chat message and pings the server (so it has been stored), bob
logs in again and must receive the message exactly once, with a XEP-0203
delay stamp and alice's full JID as sender.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_im.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import asyncio
import uuid

import harness
from harness import check, fail

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


class Client(harness.Client):
    """A slixmpp client (STARTTLS + SCRAM-SHA-256) that records presence
    and message events."""

    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port, plugins=(
            "xep_0199",  # ping
            "xep_0203",  # delayed delivery
        ))
        # slixmpp's automatic subscription handling (the defaults, made explicit).
        self.auto_authorize = True
        self.auto_subscribe = True
        self.messages = asyncio.Queue()
        self.online = {}  # bare JID -> future set on got_online
        self.offline = {}  # bare JID -> future set on got_offline
        self.subscribe_requests = []
        self.gone = asyncio.get_running_loop().create_future()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("got_online",
                               lambda p: harness.settle(self._future(self.online, p["from"].bare), p))
        self.add_event_handler("got_offline",
                               lambda p: harness.settle(self._future(self.offline, p["from"].bare), p))
        self.add_event_handler("presence_subscribe",
                               lambda p: self.subscribe_requests.append(p["from"].bare))
        self.add_event_handler("disconnected", lambda _e: harness.settle(self.gone))

    def _future(self, table, bare):
        if bare not in table:
            table[bare] = asyncio.get_running_loop().create_future()
        return table[bare]

    async def on_session(self):
        await self.get_roster(timeout=STEP_TIMEOUT)
        self.send_presence()

    async def start(self):
        await super().start(STEP_TIMEOUT)
        self.check_mech()
        check(bool(self.boundjid.resource), f"no resource bound: {self.boundjid}")

    async def wait_online(self, bare):
        try:
            return await asyncio.wait_for(self._future(self.online, bare), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.boundjid.bare} never saw {bare} come online")

    async def wait_offline(self, bare):
        try:
            return await asyncio.wait_for(self._future(self.offline, bare), STEP_TIMEOUT)
        except asyncio.TimeoutError:
            fail(f"{self.boundjid.bare} never saw {bare} go offline")

    async def wait_subscription(self, bare, want):
        """Polls the client's roster until `bare` has subscription `want`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while loop.time() < deadline:
            if bare in self.client_roster and self.client_roster[bare]["subscription"] == want:
                return
            await asyncio.sleep(0.05)
        have = self.client_roster[bare]["subscription"] if bare in self.client_roster else None
        fail(f"{self.boundjid.bare}: subscription with {bare} is {have!r}, not {want!r}")

    async def ping_server(self):
        await super().ping_server(STEP_TIMEOUT)

    async def bodies_until(self, body, seconds):
        """Messages with a body received until one with `body` (or the end
        of `seconds`)."""
        got = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not any(m["body"] == body for m in got):
            left = deadline - loop.time()
            if left <= 0:
                break
            got.extend(await self.bodies_for(min(left, 0.2)))
        return got

    def _with_body(self, msg):
        if msg["type"] == "error":
            fail(f"{self.boundjid} got an error message: {msg}")
        return bool(msg["body"])

    async def bodies_for(self, seconds):
        """Messages with a body received within `seconds` (errors fail)."""
        return await harness.collect_for(self.messages, seconds, self._with_body)

    async def close(self):
        self.disconnect(wait=2)
        try:
            await asyncio.wait_for(self.gone, 5)
        except asyncio.TimeoutError:
            self.abort()


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    b2 = None
    try:
        await asyncio.gather(a.start(), b.start())
        abare, bbare = a.boundjid.bare, b.boundjid.bare
        harness.step(f"logged in as {a.boundjid.full} and {b.boundjid.full}")

        # Subscription both ways through slixmpp's automatic handling.
        a.send_presence_subscription(pto=bbare)
        await a.wait_online(bbare)
        await b.wait_online(abare)
        await a.wait_subscription(bbare, "both")
        await b.wait_subscription(abare, "both")
        check(abare in b.subscribe_requests, f"{bbare} never got alice's subscription request")
        harness.step("subscribed both ways, presence seen both ways")

        # Bob leaves; alice sees it and writes to him while he is away.
        await b.close()
        await a.wait_offline(bbare)
        a.online.pop(bbare, None)  # so that bob's return is noticed again
        token = uuid.uuid4().hex
        body = f"offline hello {token} <&> ünïcødé"
        a.send_message(mto=bbare, mbody=body, mtype="chat")
        await a.ping_server()  # the server has stored the message

        b2 = Client(args.jid2, args.password2, args.host, args.port)
        await b2.start()
        got = await b2.bodies_until(body, STEP_TIMEOUT)
        mine = [m for m in got if m["body"] == body]
        check(len(mine) == 1,
              f"expected the offline message once, got {len(mine)} of {[m['body'] for m in got]}")
        msg = mine[0]
        check(msg["from"].full == a.boundjid.full,
              f"offline message from {msg['from'].full}, not {a.boundjid.full}")
        stamp = msg["delay"]["stamp"]
        check(stamp is not None, f"offline message without a delay stamp: {msg}")
        check(msg["delay"]["from"].full == a.boundjid.domain,
              f"delay from {msg['delay']['from']!r}, not the server")
        await b2.ping_server()
        more = [m for m in await b2.bodies_for(1) if m["body"] == body]
        check(not more, "offline message delivered twice")
        await a.wait_online(bbare)
        harness.step(f"offline message delivered once, stamped {stamp.isoformat()}")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b, b2)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
