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

import asyncio
import uuid

from slixmpp.jid import JID

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15
SERVICE = "conference.localhost"


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port,
                         plugins=("xep_0030", "xep_0004", "xep_0045", "xep_0199", "xep_0203"))
        self.groupchat = asyncio.Queue()
        self.offline = asyncio.Queue()
        self.online = asyncio.Queue()
        self.add_event_handler("groupchat_message", self.groupchat.put_nowait)

    async def on_session(self):
        await self.get_roster(timeout=STEP_TIMEOUT)
        self.send_presence()

    async def start(self):
        await super().start(STEP_TIMEOUT)

    def watch_room(self, room):
        self.add_event_handler(f"muc::{room}::got_online", self.online.put_nowait)
        self.add_event_handler(f"muc::{room}::got_offline", self.offline.put_nowait)

    async def next_from(self, queue, pred, what):
        return await harness.next_matching(queue, pred, STEP_TIMEOUT,
                                           f"{self.boundjid.bare}: no {what}")


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
        harness.step("service discovered")

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
        harness.step("room created and configured")

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
        harness.step("bob joined with history and subject")

        b.send_message(mto=room, mbody=f"hello from bob {token}", mtype="groupchat")
        m = await a.next_from(a.groupchat, lambda m: m["body"] == f"hello from bob {token}",
                              "bob's groupchat message")
        check(m["from"] == JID(f"{room}/bob"), f"from {m['from']}")

        # --- Affiliations.
        await a.plugin["xep_0045"].set_affiliation(room, "member", jid=JID(bbare), timeout=STEP_TIMEOUT)
        members = await a.plugin["xep_0045"].get_affiliation_list(room, "member", timeout=STEP_TIMEOUT)
        check(JID(bbare) in [JID(j) for j in members], f"member list {members}")
        harness.step("bob is a member")

        # --- Bob leaves.
        b.plugin["xep_0045"].leave_muc(room, "bob")
        await a.next_from(a.offline, lambda p: p["from"].resource == "bob", "bob offline in the room")
        check(sorted(a.plugin["xep_0045"].get_roster(room)) == ["alice"],
              f"alice's room roster after bob left: {a.plugin['xep_0045'].get_roster(room)}")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
