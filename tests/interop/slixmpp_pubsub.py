#!/usr/bin/env python3
"""Interop check: XEP-0060 publish-subscribe with slixmpp's own xep_0060
plugin (and xep_0059 result sets) against a running Rookery server
(service pubsub.localhost).

alice finds the service (disco#items of the server, disco#info of the
service), creates a node with a configuration form (title, max_items),
reads the configuration back; bob subscribes; alice publishes items with
and without ids; bob receives the pubsub_publish events with the payload;
bob retrieves the items (all, by id, the newest, and page by page through
xep_0059's iterator); alice retracts an item with notify and bob gets
pubsub_retract; bob reads his subscriptions, unsubscribes; alice makes bob
a publisher (modify_affiliations), reads the affiliations, purges and
deletes the node, and bob's publish to the deleted node fails with
item-not-found.

Prints "INTEROP OK <token>" and exits 0 only if every check passed.

Usage: slixmpp_pubsub.py --port PORT --jid1 JID --password1 PW --jid2 JID --password2 PW
"""

import asyncio
import uuid
import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0059 import Set
from slixmpp.plugins.xep_0060.stanza import Pubsub
from slixmpp.xmlstream import register_stanza_plugin

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15
SERVICE = "pubsub.localhost"
ATOM = "http://www.w3.org/2005/Atom"


# slixmpp's xep_0060 pages with xep_0059 but does not attach <set/> to
# <pubsub/> itself (its iterator needs it): done here, as applications do.
register_stanza_plugin(Pubsub, Set)


class Client(harness.Client):
    def __init__(self, jid, password, host, port):
        super().__init__(jid, password, host, port,
                         plugins=("xep_0030", "xep_0004", "xep_0059", "xep_0060", "xep_0199"))
        self.published = asyncio.Queue()
        self.retracted = asyncio.Queue()
        self.add_event_handler("pubsub_publish", self.published.put_nowait)
        self.add_event_handler("pubsub_retract", self.retracted.put_nowait)

    async def on_session(self):
        await self.get_roster(timeout=STEP_TIMEOUT)
        self.send_presence()

    async def start(self):
        await super().start(STEP_TIMEOUT)

    async def next_from(self, queue, pred, what):
        return await harness.next_matching(queue, pred, STEP_TIMEOUT,
                                           f"{self.boundjid.bare}: no {what}")


def entry(title):
    e = ET.Element(f"{{{ATOM}}}entry")
    t = ET.SubElement(e, f"{{{ATOM}}}title")
    t.text = title
    return e


def title_of(item):
    payload = item["payload"]
    if payload is None:
        return None
    t = payload.find(f"{{{ATOM}}}title")
    return None if t is None else t.text


def ids_of(result):
    return [i["id"] for i in result["pubsub"]["items"]]


async def run(args):
    a = Client(args.jid1, args.password1, args.host, args.port)
    b = Client(args.jid2, args.password2, args.host, args.port)
    ps_a = a.plugin["xep_0060"]
    ps_b = b.plugin["xep_0060"]
    try:
        await asyncio.gather(a.start(), b.start())
        token = uuid.uuid4().hex
        node = f"news-{token[:8]}"

        # --- Discovery.
        items = await a.plugin["xep_0030"].get_items(jid=a.boundjid.domain, timeout=STEP_TIMEOUT)
        jids = [i[0] for i in items["disco_items"]["items"]]
        check(SERVICE in jids, f"server disco#items {jids} lacks {SERVICE}")
        info = await a.plugin["xep_0030"].get_info(jid=SERVICE, timeout=STEP_TIMEOUT)
        features = info["disco_info"]["features"]
        for f in ("", "#create-nodes", "#publish", "#subscribe", "#retrieve-items"):
            check(f"http://jabber.org/protocol/pubsub{f}" in features, f"service features {features}")
        ids = [(i[0], i[1]) for i in info["disco_info"]["identities"]]
        check(("pubsub", "service") in ids, f"service identities {ids}")
        harness.step("service discovered")

        # --- Create with a configuration form; read it back.
        config = Form()
        config["type"] = "submit"
        config.add_field(var="pubsub#title", value=f"News {token[:8]}")
        config.add_field(var="pubsub#max_items", value="10")
        await ps_a.create_node(SERVICE, node, config=config, timeout=STEP_TIMEOUT)
        got = await ps_a.get_node_config(SERVICE, node, timeout=STEP_TIMEOUT)
        values = got["pubsub_owner"]["configure"]["form"].get_values()
        check(values.get("pubsub#title") == f"News {token[:8]}", f"title {values.get('pubsub#title')!r}")
        check(str(values.get("pubsub#max_items")) == "10", f"max_items {values.get('pubsub#max_items')!r}")
        nodes = await ps_b.get_nodes(SERVICE, timeout=STEP_TIMEOUT)
        check(node in [i[1] for i in nodes["disco_items"]["items"]], f"nodes {nodes['disco_items']['items']}")
        harness.step("node created and configured")

        # --- Bob subscribes; alice publishes; bob is notified.
        sub = await ps_b.subscribe(SERVICE, node, timeout=STEP_TIMEOUT)
        check(sub["pubsub"]["subscription"]["subscription"] == "subscribed",
              f"subscription {sub['pubsub']['subscription']['subscription']}")
        r = await ps_a.publish(SERVICE, node, id="first", payload=entry(f"First {token}"), timeout=STEP_TIMEOUT)
        check(r["pubsub"]["publish"]["item"]["id"] == "first", f"published id {r['pubsub']['publish']['item']['id']}")
        m = await b.next_from(b.published,
                              lambda m: m["pubsub_event"]["items"]["node"] == node, "publish event")
        item = m["pubsub_event"]["items"]["item"]
        check(item["id"] == "first", f"event item id {item['id']}")
        check(title_of(item) == f"First {token}", f"event payload title {title_of(item)!r}")
        generated = []
        for n in range(2, 6):
            r = await ps_a.publish(SERVICE, node, payload=entry(f"Entry {n} {token}"), timeout=STEP_TIMEOUT)
            generated.append(r["pubsub"]["publish"]["item"]["id"])
            await b.next_from(b.published, lambda m: m["pubsub_event"]["items"]["item"]["id"] == generated[-1],
                              f"event for entry {n}")
        check(len(set(generated)) == 4 and all(generated), f"generated ids {generated}")
        harness.step("published and notified")

        # --- Retrieval: all, by id, the newest, page by page.
        r = await ps_b.get_items(SERVICE, node, timeout=STEP_TIMEOUT)
        check(ids_of(r) == ["first"] + generated, f"all items {ids_of(r)}")
        r = await ps_b.get_item(SERVICE, node, "first", timeout=STEP_TIMEOUT)
        check(ids_of(r) == ["first"], f"item by id {ids_of(r)}")
        check(title_of(r["pubsub"]["items"]["item"]) == f"First {token}", "payload of the item by id")
        r = await ps_b.get_items(SERVICE, node, max_items=2, timeout=STEP_TIMEOUT)
        check(ids_of(r) == generated[-2:], f"newest two {ids_of(r)}")
        paged = []
        async for page in ps_b.get_items(SERVICE, node, iterator=True):
            paged.extend(ids_of(page))
            check(len(paged) <= 5, f"paging does not end: {paged}")
        check(sorted(paged) == sorted(["first"] + generated), f"paged items {paged}")
        harness.step("items retrieved")

        # --- Retract with notify.
        await ps_a.retract(SERVICE, node, "first", notify=True, timeout=STEP_TIMEOUT)
        m = await b.next_from(b.retracted,
                              lambda m: m["pubsub_event"]["items"]["node"] == node, "retract event")
        check(m["pubsub_event"]["items"]["retract"]["id"] == "first", "retracted id")
        r = await ps_b.get_items(SERVICE, node, timeout=STEP_TIMEOUT)
        check("first" not in ids_of(r), f"items after retract {ids_of(r)}")
        harness.step("retracted")

        # --- Subscriptions and affiliations.
        subs = await ps_b.get_subscriptions(SERVICE, timeout=STEP_TIMEOUT)
        mine = [(s["node"], s["subscription"]) for s in subs["pubsub"]["subscriptions"]]
        check((node, "subscribed") in mine, f"bob's subscriptions {mine}")
        await ps_b.unsubscribe(SERVICE, node, timeout=STEP_TIMEOUT)
        try:
            await ps_b.publish(SERVICE, node, payload=entry("not allowed"), timeout=STEP_TIMEOUT)
            check(False, "bob published without being a publisher")
        except IqError as e:
            check(e.iq["error"]["condition"] == "forbidden", f"bob's publish: {e.iq['error']['condition']}")
        await ps_a.modify_affiliations(SERVICE, node, affiliations=[(b.boundjid.bare, "publisher")],
                                       timeout=STEP_TIMEOUT)
        affs = await ps_a.get_node_affiliations(SERVICE, node, timeout=STEP_TIMEOUT)
        pairs = {(str(x["jid"]), x["affiliation"]) for x in affs["pubsub_owner"]["affiliations"]}
        check((b.boundjid.bare, "publisher") in pairs and (a.boundjid.bare, "owner") in pairs,
              f"affiliations {pairs}")
        await ps_b.publish(SERVICE, node, id="bobs", payload=entry("From bob"), timeout=STEP_TIMEOUT)
        harness.step("affiliations")

        # --- Purge and delete.
        await ps_a.purge(SERVICE, node, timeout=STEP_TIMEOUT)
        r = await ps_a.get_items(SERVICE, node, timeout=STEP_TIMEOUT)
        check(ids_of(r) == [], f"items after purge {ids_of(r)}")
        await ps_a.delete_node(SERVICE, node, timeout=STEP_TIMEOUT)
        try:
            await ps_b.get_items(SERVICE, node, timeout=STEP_TIMEOUT)
            check(False, "the deleted node still answers")
        except IqError as e:
            check(e.iq["error"]["condition"] == "item-not-found", f"deleted node: {e.iq['error']['condition']}")
        harness.ok(token)
    finally:
        await harness.disconnect_all(a, b)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__, accounts=2), HARD_TIMEOUT)
