#!/usr/bin/env python3
"""Interop check: XEP-0045 Multi-User Chat with slixmpp's own xep_0045
plugin against a running Rookery server (service conference.localhost).

alice finds the service (disco#items of the server, disco#info of the
service), creates a room with join_muc_wait (self-presence with 110 and
201), reads and submits the configuration form (room name), says
something and sets the subject; bob joins with join_muc_wait and must get
alice as occupant, the history message (with its delay from the room) and
the subject; both rosters (get_roster) hold both nicks; bob's groupchat
message reaches alice; alice makes bob a member and reads the member list;
bob leaves and alice sees him go offline.

Prints "INTEROP OK <token>" and exits 0 only if every check passed.

Usage: slixmpp_muc.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys
import uuid

import slixmpp
from slixmpp.jid import JID

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15
SERVICE = "conference.localhost"


def check(cond, what):
    if not cond:
        fail(what)


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.target = (host, port)
        for p in ("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0203"):
            self.register_plugin(p)
        self.groupchat = asyncio.Queue()
        self.offline = asyncio.Queue()
        self.online = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("groupchat_message", lambda m: self.groupchat.put_nowait(m))
        self.add_event_handler("failed_all_auth", self._on_fail)

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
            self.started.set_exception(RuntimeError("authentication failed"))

    async def start(self):
        self.connect(*self.target)
        await asyncio.wait_for(self.started, STEP_TIMEOUT)

    def watch_room(self, room):
        self.add_event_handler(f"muc::{room}::got_online", lambda p: self.online.put_nowait(p))
        self.add_event_handler(f"muc::{room}::got_offline", lambda p: self.offline.put_nowait(p))

    async def next_from(self, queue, pred, what):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                fail(f"{self.boundjid.bare}: no {what}")
            try:
                m = await asyncio.wait_for(queue.get(), left)
            except asyncio.TimeoutError:
                fail(f"{self.boundjid.bare}: no {what}")
            if pred(m):
                return m


def codes(pres):
    return {int(c) for c in pres["muc"]["status_codes"]}


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        bbare = b.boundjid.bare
        token = uuid.uuid4().hex
        room = JID(f"room-{token[:8]}@{SERVICE}")
        a.watch_room(room)

        # --- Discovery.
        items = await a.plugin["xep_0030"].get_items(jid=a.boundjid.domain, timeout=STEP_TIMEOUT)
        jids = [i[0] for i in items["disco_items"]["items"]]
        check(SERVICE in jids, f"server disco#items {jids} lacks {SERVICE}")
        info = await a.plugin["xep_0030"].get_info(jid=SERVICE, timeout=STEP_TIMEOUT)
        check("http://jabber.org/protocol/muc" in info["disco_info"]["features"],
              f"service features: {info['disco_info']['features']}")
        ids = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
        check(("conference", "text") in ids, f"service identities {ids}")
        print("service discovered", flush=True)

        # --- Alice creates the room.
        pres, subject, occupants, history = await a.plugin["xep_0045"].join_muc_wait(
            room, "alice", maxstanzas=20, timeout=STEP_TIMEOUT)
        check({110, 201} <= codes(pres), f"alice's self-presence codes {codes(pres)}")
        check(pres["muc"]["affiliation"] == "owner", f"alice's affiliation {pres['muc']['affiliation']}")
        form = await a.plugin["xep_0045"].get_room_config(room, timeout=STEP_TIMEOUT)
        fields = form.get_fields()
        check("muc#roomconfig_roomname" in fields, f"config fields {list(fields)}")
        # Submit the whole form back with one value changed, as clients do.
        form.reply()
        form.set_values({"muc#roomconfig_roomname": f"Room {token[:8]}"})
        await a.plugin["xep_0045"].set_room_config(room, form, timeout=STEP_TIMEOUT)
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP_TIMEOUT)
        names = [i[3] for i in info["disco_info"]["identities"]]
        check(f"Room {token[:8]}" in names, f"room identities {names}")
        print("room created and configured", flush=True)

        a.send_message(mto=room, mbody=f"first {token}", mtype="groupchat")
        await a.next_from(a.groupchat, lambda m: m["body"] == f"first {token}", "own groupchat echo")
        a.plugin["xep_0045"].set_subject(room, f"Subject {token}")
        await asyncio.sleep(0.3)

        # --- Bob joins: alice present, history, subject.
        pres, subject, occupants, history = await b.plugin["xep_0045"].join_muc_wait(
            room, "bob", maxstanzas=20, timeout=STEP_TIMEOUT)
        check(110 in codes(pres), f"bob's self-presence codes {codes(pres)}")
        check(subject["subject"] == f"Subject {token}", f"subject {subject['subject']!r}")
        nicks = [p["from"].resource for p in occupants]
        check("alice" in nicks, f"bob's occupants {nicks}")
        bodies = [m["body"] for m in history]
        check(f"first {token}" in bodies, f"bob's history {bodies}")
        await a.next_from(a.online, lambda p: p["from"].resource == "bob", "bob online in the room")
        for c in (a, b):
            roster = sorted(c.plugin["xep_0045"].get_roster(room))
            check(roster == ["alice", "bob"], f"{c.boundjid.bare}: room roster {roster}")
        print("bob joined with history and subject", flush=True)

        b.send_message(mto=room, mbody=f"hello from bob {token}", mtype="groupchat")
        m = await a.next_from(a.groupchat, lambda m: m["body"] == f"hello from bob {token}",
                              "bob's groupchat message")
        check(m["from"] == JID(f"{room}/bob"), f"from {m['from']}")

        # --- Affiliations.
        await a.plugin["xep_0045"].set_affiliation(room, "member", jid=JID(bbare), timeout=STEP_TIMEOUT)
        members = await a.plugin["xep_0045"].get_affiliation_list(room, "member", timeout=STEP_TIMEOUT)
        check(JID(bbare) in [JID(j) for j in members], f"member list {members}")
        print("bob is a member", flush=True)

        # --- Bob leaves.
        b.plugin["xep_0045"].leave_muc(room, "bob")
        await a.next_from(a.offline, lambda p: p["from"].resource == "bob", "bob offline in the room")
        check(sorted(a.plugin["xep_0045"].get_roster(room)) == ["alice"],
              f"alice's room roster after bob left: {a.plugin['xep_0045'].get_roster(room)}")
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
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING, stream=sys.stderr)
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
