#!/usr/bin/env python3
"""Interop check: slixmpp's XEP-0050/XEP-0133 plugins against mod_adhoc.

An admin lists the server's commands (disco#items on the commands node),
then runs add-user with slixmpp's xep_0133 plugin: it receives the form,
fills accountjid/password/password-verify, completes the command and
expects status 'completed'. Prints "INTEROP OK <jid>" and exits 0 only if
every step passed (the caller then checks the new account with rookery ctl).

Usage: slixmpp_adhoc.py --port PORT --jid ADMIN --password PW --new-jid JID --new-password PW
"""

import argparse
import asyncio
import logging
import signal
import ssl
import sys

import slixmpp

HARD_TIMEOUT = 30
ADD_USER = "http://jabber.org/protocol/admin#add-user"


def fail(what):
    print(f"INTEROP FAIL: {what}", flush=True)
    raise SystemExit(1)


class Admin(slixmpp.ClientXMPP):
    def __init__(self, args):
        super().__init__(args.jid, args.password)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.args = args
        for p in ("xep_0030", "xep_0004", "xep_0050", "xep_0133"):
            self.register_plugin(p)
        loop = asyncio.get_running_loop()
        self.started = loop.create_future()
        self.done = loop.create_future()
        self.add_event_handler("session_start", lambda _e: self.started.done() or self.started.set_result(True))
        self.add_event_handler("failed_all_auth", lambda _e: self.started.done() or self.started.set_exception(RuntimeError("auth failed")))

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
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"error: {iq['error']['condition']} {iq['error']['text']}"))


async def run(args):
    a = Admin(args)
    a.connect(args.host, args.port)
    await asyncio.wait_for(a.started, 15)
    items = await a["xep_0133"].get_commands(jid=a.boundjid.server, timeout=10)
    nodes = [i[1] for i in items["disco_items"]["items"]]
    if ADD_USER not in nodes:
        fail(f"add-user not listed: {nodes}")
    a["xep_0133"].add_user(session={"next": a._form, "error": a._error})
    await asyncio.wait_for(a.done, 15)
    print(f"INTEROP OK {args.new_jid}", flush=True)
    a.disconnect(wait=1)
    await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--new-jid", required=True)
    p.add_argument("--new-password", required=True)
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
