#!/usr/bin/env python3
"""Interop check: slixmpp's XEP-0050/XEP-0133 plugins against mod_adhoc.

An admin lists the server's commands (disco#items on the commands node),
then runs add-user with slixmpp's xep_0133 plugin: it receives the form,
fills accountjid/password/password-verify, completes the command and
expects status 'completed'. Prints "INTEROP OK <jid>" and exits 0 only if
every step passed (the caller then checks the new account with rookery ctl).

Usage: slixmpp_adhoc.py --port PORT --jid ADMIN --password PW --new-jid JID --new-password PW
"""

import asyncio

import harness
from harness import fail

HARD_TIMEOUT = 30
ADD_USER = "http://jabber.org/protocol/admin#add-user"


class Admin(harness.Client):
    def __init__(self, args):
        # No forced mechanism: the server's default choice.
        super().__init__(args.jid, args.password, args.host, args.port, mech=None,
                         plugins=("xep_0030", "xep_0004", "xep_0050", "xep_0133"))
        self.args = args
        self.done = asyncio.get_running_loop().create_future()

    def _form(self, iq, session):
        form = iq["command"]["form"]
        fields = form.get_fields()
        if "accountjid" not in fields or "password" not in fields:
            self.done.set_exception(RuntimeError(f"unexpected add-user form: {form}"))
            return
        answer = self["xep_0004"].make_form(ftype="submit")
        answer.add_field(var="FORM_TYPE", ftype="hidden", value="http://jabber.org/protocol/admin")
        answer.add_field(var="accountjid", value=self.args.new_jid)
        answer.add_field(var="password", value=self.args.new_password)
        answer.add_field(var="password-verify", value=self.args.new_password)
        session["payload"] = answer
        session["next"] = self._done
        self["xep_0050"].complete_command(session)

    def _done(self, iq, session):
        status = iq["command"]["status"]
        if status == "completed":
            self.done.set_result(True)
        else:
            self.done.set_exception(RuntimeError(f"status {status}"))

    def _error(self, iq, session):
        harness.settle_error(
            self.done, RuntimeError(f"error: {iq['error']['condition']} {iq['error']['text']}"))


async def run(args):
    a = Admin(args)
    await a.start()
    items = await a["xep_0133"].get_commands(jid=a.boundjid.server, timeout=10)
    nodes = [i[1] for i in items["disco_items"]["items"]]
    if ADD_USER not in nodes:
        fail(f"add-user not listed: {nodes}")
    a["xep_0133"].add_user(session={"next": a._form, "error": a._error})
    await asyncio.wait_for(a.done, 15)
    harness.ok(args.new_jid)
    await harness.disconnect_all(a)


if __name__ == "__main__":
    p = harness.parser(__doc__)
    p.add_argument("--new-jid", required=True)
    p.add_argument("--new-password", required=True)
    harness.main(run, p, HARD_TIMEOUT)
