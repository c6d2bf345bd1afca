#!/usr/bin/env python3
"""Interop check: room archives and occupant features with slixmpp's own
plugins (xep_0045, xep_0313, xep_0359, xep_0410, xep_0421, xep_0424,
xep_0425) against a running Rookery server (service conference.localhost).

alice creates a room and says three things; each echo carries one
stanza-id by the room and an occupant id. bob joins (his history carries
the same stanza-ids), and pages the room's archive two at a time with
xep_0313's iterator: the three messages once each, in order, with the live
ids. Self-pings (xep_0410): bob joined → JOINED; a room he is not in →
DISCONNECTED. bob retracts his own message (xep_0424): alice gets the
retraction. alice, a moderator, moderates one of bob's messages
(xep_0425): bob gets the moderation event, and the archive holds a
tombstone instead.

Prints "INTEROP OK <token>" and exits 0 only if every check passed.

Usage: slixmpp_muc_archive.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import asyncio
import uuid

from slixmpp.jid import JID

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15
SERVICE = "conference.localhost"
NS_SID = "urn:xmpp:sid:0"
NS_OID = "urn:xmpp:occupant-id:0"
NS_RETRACT = "urn:xmpp:message-retract:1"


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port, plugins=(
            "xep_0030", "xep_0004", "xep_0045", "xep_0059", "xep_0199", "xep_0203",
            "xep_0313", "xep_0359", "xep_0410", "xep_0421", "xep_0424", "xep_0425"))
        self.groupchat = asyncio.Queue()
        self.moderated = asyncio.Queue()
        self.add_event_handler("groupchat_message", self.groupchat.put_nowait)
        self.add_event_handler("moderated_message", self.moderated.put_nowait)

    async def on_session(self):
        await self.get_roster(timeout=STEP_TIMEOUT)
        self.send_presence()

    async def start(self):
        await super().start(STEP_TIMEOUT)

    async def next_from(self, queue, pred, what):
        return await harness.next_matching(queue, pred, STEP_TIMEOUT,
                                           f"{self.boundjid.bare}: no {what}")

    async def archive(self, room):
        out = []
        async for res in self.plugin["xep_0313"].iterate(jid=room, rsm={"max": 2}):
            check(res["from"].bare == room.bare, f"a result from {res['from']}")
            out.append((res["mam_result"]["id"], res["mam_result"]["forwarded"]["stanza"]))
            check(len(out) < 1000, "the room archive iteration does not end")
        return out


def sids(msg, room):
    return [e.get("id") for e in msg.xml.findall(f"{{{NS_SID}}}stanza-id")
            if e.get("by") == str(room.bare)]


def oids(msg):
    return [e.get("id") for e in msg.xml.findall(f"{{{NS_OID}}}occupant-id")]


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    try:
        await asyncio.gather(a.start(), b.start())
        token = uuid.uuid4().hex
        room = JID(f"archive-{token[:8]}@{SERVICE}")
        muc = "http://jabber.org/protocol/muc"

        await a.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=20, timeout=STEP_TIMEOUT)
        info = await a.plugin["xep_0030"].get_info(jid=room, timeout=STEP_TIMEOUT)
        feats = info["disco_info"]["features"]
        for f in (muc, "urn:xmpp:mam:2", NS_OID, "urn:xmpp:message-moderate:1"):
            check(f in feats, f"room features lack {f}: {feats}")
        sent, live = [f"archived {i} {token}" for i in range(3)], []
        for body in sent:
            a.send_message(mto=room, mbody=body, mtype="groupchat")
            m = await a.next_from(a.groupchat, lambda m, body=body: m["body"] == body, "own echo")
            ids = sids(m, room)
            check(len(ids) == 1, f"stanza-ids by the room on the echo: {ids}")
            check(len(oids(m)) == 1, f"occupant ids on the echo: {oids(m)}")
            live.append(ids[0])
        harness.step("three messages with stanza-ids and occupant ids")

        _, _, _, history = await b.plugin["xep_0045"].join_muc_wait(
            room, "bob", maxstanzas=20, timeout=STEP_TIMEOUT)
        hist = [sids(m, room)[0] for m in history if m["body"] in sent]
        check(hist == live, f"history stanza-ids {hist} != live {live}")
        got = await b.archive(room)
        check([i for i, _ in got] == live, f"archive ids {[i for i, _ in got]} != live {live}")
        check([m["body"] for _, m in got] == sent, "archive bodies differ")
        harness.step("bob's history and the room archive carry the same ids, once each")

        status = await b.plugin["xep_0410"].send_self_ping(JID(f"{room}/bob"), timeout=STEP_TIMEOUT)
        check(status.name == "JOINED", f"self-ping while joined: {status}")
        other = JID(f"elsewhere-{token[:8]}@{SERVICE}/bob")
        status = await b.plugin["xep_0410"].send_self_ping(other, timeout=STEP_TIMEOUT)
        check(status.name == "DISCONNECTED", f"self-ping to a room bob is not in: {status}")
        harness.step("self-pings answered")

        b.send_message(mto=room, mbody=f"oops {token}", mtype="groupchat")
        m = await b.next_from(b.groupchat, lambda m: m["body"] == f"oops {token}", "own echo")
        oops = sids(m, room)[0]
        b.plugin["xep_0424"].send_retraction(room, oops, mtype="groupchat")
        await a.next_from(
            a.groupchat,
            lambda m: m.xml.find(f"{{{NS_RETRACT}}}retract") is not None
            and m.xml.find(f"{{{NS_RETRACT}}}retract").get("id") == oops,
            "bob's retraction")
        harness.step("retraction by the sender broadcast")

        b.send_message(mto=room, mbody=f"spam {token}", mtype="groupchat")
        m = await b.next_from(b.groupchat, lambda m: m["body"] == f"spam {token}", "own echo")
        spam = sids(m, room)[0]
        await a.plugin["xep_0425"].moderate(room, spam, "Spam", timeout=STEP_TIMEOUT)
        ev = await b.next_from(b.moderated, lambda m: m["retract"]["id"] == spam, "moderation event")
        check(ev["retract"]["moderated"]["by"] == JID(f"{room}/alice"),
              f"moderated by {ev['retract']['moderated']['by']}")
        got = dict(await b.archive(room))
        for sid in (oops, spam):
            check(not got[sid]["body"], f"archived {sid} still has a body")
            check(got[sid].xml.find(f"{{{NS_RETRACT}}}retracted") is not None,
                  f"no tombstone for {sid}")
        harness.step("moderation broadcast and tombstones in the archive")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
