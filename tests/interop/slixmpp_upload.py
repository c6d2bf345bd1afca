#!/usr/bin/env python3
"""Interop check: XEP-0363 HTTP file upload with slixmpp's own plugin
(xep_0363, which uploads with aiohttp) against a running Rookery server.

The client (STARTTLS, SCRAM-SHA-256) lets the plugin discover the upload
service, request a slot and PUT a file; the script then downloads the GET
URL with aiohttp and compares the bytes.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout.

Usage: slixmpp_upload.py --port C2S --jid JID --password PW
"""

import argparse
import asyncio
import logging
import os
import signal
import ssl
import sys
import tempfile
import uuid

import aiohttp
import slixmpp

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


def check(cond, what):
    if not cond:
        print(f"INTEROP FAIL: {what}", flush=True)
        raise SystemExit(1)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password, sasl_mech="SCRAM-SHA-256")
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.ssl_context = ctx
        self.enable_direct_tls = False
        self.enable_starttls = True
        self.enable_plaintext = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0363")
        self.started = asyncio.get_running_loop().create_future()
        self.add_event_handler("session_start", self._start)

    def _start(self, _event):
        if not self.started.done():
            self.started.set_result(True)


async def run(args):
    token = uuid.uuid4().hex[:8]
    client = Client(args.jid, args.password)
    client.connect(args.host, args.port)
    await asyncio.wait_for(client.started, STEP_TIMEOUT)
    data = (f"rookery upload {token}\n" * 20).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"note {token}.txt")
        with open(path, "wb") as f:
            f.write(data)
        try:
            url = await client["xep_0363"].upload_file(path, content_type="text/plain",
                                                       timeout=STEP_TIMEOUT)
            check(url.startswith("http://"), f"unexpected GET URL {url}")
            async with aiohttp.ClientSession() as session:
                async with session.get(url) as resp:
                    check(resp.status == 200, f"GET {url}: {resp.status}")
                    body = await resp.read()
            check(body == data, "downloaded bytes differ from the upload")
            print(f"INTEROP OK {token}", flush=True)
        finally:
            client.disconnect(wait=1)
            await asyncio.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--debug", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        stream=sys.stderr)
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
