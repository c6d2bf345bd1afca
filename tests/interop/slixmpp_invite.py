#!/usr/bin/env python3
"""Interop check: a slixmpp client redeems a Rookery invitation in-band
(XEP-0445) on a server whose open registration is off.

slixmpp has no XEP-0445 plugin; this script adds the little a client
needs on top of its XEP-0077 plugin: it recognises the
`<register xmlns='urn:xmpp:ibr-token:0'/>` stream feature, sends
`<preauth xmlns='urn:xmpp:pars:0' token='…'/>`, then registers with
xep_0077's form (get, then set) and logs in with the new account.

1. Without the token, slixmpp's own registration is refused (`not-allowed`).
2. With it, the account is created and the client logs in.

Prints "INTEROP OK <user>" and exits 0 only if every step passed.

Usage: slixmpp_invite.py --port PORT --jid JID --password PW --token TOKEN
"""

from slixmpp.exceptions import IqError
from slixmpp.stanza import Iq, StreamFeatures
from slixmpp.xmlstream import ElementBase, register_stanza_plugin

import harness
from harness import check, fail

HARD_TIMEOUT = 40
NS_IBR_TOKEN = "urn:xmpp:ibr-token:0"
NS_PARS = "urn:xmpp:pars:0"


class IbrToken(ElementBase):
    """The XEP-0445 stream feature."""
    name = "register"
    namespace = NS_IBR_TOKEN
    plugin_attrib = "ibr_token"
    interfaces = set()


class Preauth(ElementBase):
    """XEP-0379/XEP-0445 `<preauth token='…'/>`."""
    name = "preauth"
    namespace = NS_PARS
    plugin_attrib = "preauth"
    interfaces = {"token"}


class Client(harness.Client):
    def __init__(self, jid, password, host, port, token):
        super().__init__(jid, password, host, port, mech=None,
                         plugins=("xep_0030", "xep_0004", "xep_0066", "xep_0077"))
        register_stanza_plugin(StreamFeatures, IbrToken)
        register_stanza_plugin(Iq, Preauth)
        # Before xep_0077 (50) and SASL (100).
        self.register_feature("ibr_token", self._redeem, restart=False, order=40)
        self.token = token
        self.registered = False
        self.refusal = None

    async def _register(self):
        form = await self.plugin["xep_0077"].get_registration(timeout=10)
        if form.xml.find(f"{{jabber:iq:register}}query/{{jabber:iq:register}}username") is None:
            fail(f"no username field in the registration form: {form}")
        resp = self.Iq()
        resp["type"] = "set"
        resp["register"]["username"] = self.boundjid.user
        resp["register"]["password"] = self.password
        await resp.send(timeout=10)

    async def _redeem(self, _features):
        if self.token is None:
            try:
                await self._register()
            except IqError as e:
                self.refusal = e.iq["error"]["condition"]
            self.disconnect()
            return True
        iq = self.Iq()
        iq["type"] = "set"
        iq["preauth"]["token"] = self.token
        # slixmpp holds stanzas other than bind, session and register until
        # the session starts; <preauth/> must go out before authentication.
        self._always_send_everything = True
        try:
            await iq.send(timeout=10)
            self._always_send_everything = False
            await self._register()
        except IqError as e:
            fail(f"invitation refused: {e.iq['error']['condition']} {e.iq['error']['text']}")
        self.registered = True
        return False


async def run(args):
    # 1. No token: registration is refused.
    a = Client(args.jid, args.password, args.host, args.port, None)
    a.connect(*a.target)
    await a.disconnected
    check(a.refusal == "not-allowed", f"registration without an invitation: {a.refusal}")
    harness.step("registration without an invitation refused")

    # 2. With the token: registered and logged in.
    b = Client(args.jid, args.password, args.host, args.port, args.token)
    await b.start()
    check(b.registered, "logged in without registering first")
    harness.step(f"registered with the invitation and logged in as {b.boundjid.full}")
    harness.ok(b.boundjid.user)
    await harness.disconnect_all(b)


if __name__ == "__main__":
    p = harness.parser(__doc__)
    p.add_argument("--token", required=True)
    harness.main(run, p, HARD_TIMEOUT)
