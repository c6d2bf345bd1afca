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
    """A slixmpp client restricted to STARTTLS + SCRAM-SHA-256 that records
    presence and message events."""

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
        # slixmpp's automatic subscription handling (the defaults, made explicit).
        self.auto_authorize = True
        self.auto_subscribe = True
        self.register_plugin("xep_0199")  # ping
        self.register_plugin("xep_0203")  # delayed delivery
        self.messages = asyncio.Queue()
        self.online = {}  # bare JID -> future set on got_online
        self.offline = {}  # bare JID -> future set on got_offline
        self.subscribe_requests = []
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.gone = loop.create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("got_online", self._on_online)
        self.add_event_handler("got_offline", self._on_offline)
        self.add_event_handler("presence_subscribe", self._on_subscribe)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("failed_all_auth", self._on_fail)
        self.add_event_handler("failed_auth", self._on_fail)

    def _future(self, table, bare):
        if bare not in table:
            table[bare] = asyncio.get_running_loop().create_future()
        return table[bare]

    async def _on_start(self, _event):
        try:
            await self.get_roster(timeout=STEP_TIMEOUT)
            self.send_presence()
            if not self.started.done():
                self.started.set_result(True)
        except Exception as e:  # noqa: BLE001 - reported through the future
            if not self.started.done():
                self.started.set_exception(e)

    def _on_fail(self, _event):
        if not self.started.done():
            self.started.set_exception(RuntimeError(f"{self.boundjid.bare}: authentication failed"))

    def _on_message(self, msg):
        self.messages.put_nowait(msg)

    def _on_online(self, pres):
        fut = self._future(self.online, pres["from"].bare)
        if not fut.done():
            fut.set_result(pres)

    def _on_offline(self, pres):
        fut = self._future(self.offline, pres["from"].bare)
        if not fut.done():
            fut.set_result(pres)

    def _on_subscribe(self, pres):
        self.subscribe_requests.append(pres["from"].bare)

    def _on_disconnected(self, _event):
        if not self.gone.done():
            self.gone.set_result(True)

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)
        mech = self.plugin["feature_mechanisms"].mech
        check(mech is not None and mech.name == MECH,
              f"{self.boundjid.bare} authenticated with {mech and mech.name}, not {MECH}")
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
        await self.plugin["xep_0199"].ping(jid=self.boundjid.domain, timeout=STEP_TIMEOUT)

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

    async def bodies_for(self, seconds):
        """Messages with a body received within `seconds` (errors fail)."""
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
            if msg["body"]:
                got.append(msg)

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
        print(f"logged in as {a.boundjid.full} and {b.boundjid.full}", flush=True)

        # Subscription both ways through slixmpp's automatic handling.
        a.send_presence_subscription(pto=bbare)
        await a.wait_online(bbare)
        await b.wait_online(abare)
        await a.wait_subscription(bbare, "both")
        await b.wait_subscription(abare, "both")
        check(abare in b.subscribe_requests, f"{bbare} never got alice's subscription request")
        print("subscribed both ways, presence seen both ways", flush=True)

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
        print(f"offline message delivered once, stamped {stamp.isoformat()}", flush=True)
        print(f"INTEROP OK {token}", flush=True)
    finally:
        for c in (a, b, b2):
            if c is None:
                continue
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
