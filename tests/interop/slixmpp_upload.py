#!/usr/bin/env python3
"""Interop check: XEP-0363 HTTP file upload with slixmpp's own plugin
(xep_0363, which uploads with aiohttp) against a running Rookery server.

The client (STARTTLS, SCRAM-SHA-256) lets the plugin discover the upload
service, request a slot and PUT a file; the script then downloads the GET
URL with aiohttp and compares the bytes.

Prints "INTEROP OK <token>" and exits 0 only if every check passed; exits 1
on any failure and is killed by SIGALRM after a hard timeout (see harness.py).

Usage: slixmpp_upload.py --port C2S --jid JID --password PW
"""

import os
import tempfile
import uuid

import aiohttp

import harness
from harness import check

HARD_TIMEOUT = 60
STEP_TIMEOUT = 15


async def run(args):
    token = uuid.uuid4().hex[:8]
    client = harness.Client(args.jid, args.password, args.host, args.port,
                            plugins=("xep_0030", "xep_0363"))
    await client.start(STEP_TIMEOUT)
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
            harness.ok(token)
        finally:
            await harness.disconnect_all(client)


if __name__ == "__main__":
    harness.main(run, harness.parser(__doc__), HARD_TIMEOUT)
