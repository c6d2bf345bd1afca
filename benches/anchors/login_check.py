#!/usr/bin/env python3
"""Log in once to an XMPP server: STARTTLS, SCRAM, resource binding.

Used by benches/compare.sh to check that a freshly started server accepts the
benchmark users before any load is sent. Standard library only.

    login_check.py HOST PORT DOMAIN USER PASSWORD [SCRAM-SHA-1|SCRAM-SHA-256]

Exit 0 and print "ok <full JID> <mechanisms>" on success; exit 1 with a
message otherwise. Every step has a timeout (10 s in all by default).
"""
import base64
import hashlib
import hmac
import os
import re
import socket
import ssl
import sys
import time

TIMEOUT = float(os.environ.get("LOGIN_CHECK_TIMEOUT", "10"))


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.deadline = time.monotonic() + TIMEOUT

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def read_until(self, pattern):
        """Read until the buffer matches pattern (a regex on bytes); return the match."""
        rx = re.compile(pattern, re.S)
        while True:
            m = rx.search(self.buf)
            if m:
                self.buf = self.buf[m.end():]
                return m
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for %r; got %r" % (pattern, self.buf[-300:]))
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed; got %r" % self.buf[-300:])
            self.buf += chunk


def open_stream(c, domain):
    c.send("<?xml version='1.0'?><stream:stream to='%s' xmlns='jabber:client' "
           "xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>" % domain)
    return c.read_until(rb"<stream:features.*?</stream:features>").group(0)


def hi(hashname, password, salt, iterations):
    return hashlib.pbkdf2_hmac(hashname, password, salt, iterations)


def main():
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, domain, user, password = sys.argv[1:6]
    mech = sys.argv[6] if len(sys.argv) > 6 else "SCRAM-SHA-1"
    hashname = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[mech.upper()]

    sock = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    c = Conn(sock)
    feats = open_stream(c, domain)
    if b"starttls" not in feats:
        raise RuntimeError("no STARTTLS offered: %r" % feats)
    c.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    c.read_until(rb"<proceed[^>]*/>")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the benchmark's self-signed certificate
    c.sock = ctx.wrap_socket(sock, server_hostname=domain)
    c.buf = b""
    feats = open_stream(c, domain)
    mechs = re.findall(rb"<mechanism>([^<]+)</mechanism>", feats)
    if mech.encode() not in mechs:
        raise RuntimeError("%s not offered; offered: %r" % (mech, mechs))

    nonce = base64.b64encode(os.urandom(18)).decode()
    first_bare = "n=%s,r=%s" % (user, nonce)
    c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='%s'>%s</auth>"
           % (mech, base64.b64encode(("n,," + first_bare).encode()).decode()))
    m = c.read_until(rb"<(challenge|failure)[^>]*>(.*?)</\1>")
    if m.group(1) == b"failure":
        raise RuntimeError("auth failure: %r" % m.group(0))
    server_first = base64.b64decode(m.group(2)).decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise RuntimeError("bad server nonce")
    salted = hi(hashname, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", hashname).digest()
    stored_key = hashlib.new(hashname, client_key).digest()
    final_wo_proof = "c=biws,r=%s" % attrs["r"]
    auth_msg = ",".join([first_bare, server_first, final_wo_proof]).encode()
    sig = hmac.new(stored_key, auth_msg, hashname).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    c.send("<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>%s</response>"
           % base64.b64encode((final_wo_proof + ",p=" + base64.b64encode(proof).decode()).encode()).decode())
    m = c.read_until(rb"<(success|failure)[^>]*(/>|>.*?</\1>)")
    if m.group(1) != b"success":
        raise RuntimeError("auth failure: %r" % m.group(0))

    c.buf = b""
    open_stream(c, domain)
    c.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
           "<resource>check</resource></bind></iq>")
    m = c.read_until(rb"<jid>([^<]+)</jid>")
    jid = m.group(1).decode()
    c.send("</stream:stream>")
    try:
        c.read_until(rb"</stream:stream>")
    except Exception:
        pass
    c.sock.close()
    print("ok %s %s" % (jid, ",".join(x.decode() for x in mechs)))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - report any failure as exit 1
        print("login check failed: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
