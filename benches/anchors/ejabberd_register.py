#!/usr/bin/env python3
"""Create accounts on ejabberd through its ReST API (mod_http_api "register").

    ejabberd_register.py URL HOST PASSWORD USER...
    ejabberd_register.py URL HOST PASSWORD -        (user names on stdin)

URL is the API base, e.g. http://127.0.0.1:25280/api. Four keep-alive
connections in parallel; each request has a 30 s timeout. An account that
already exists counts as done. Exit 0 if every account exists afterwards.
Standard library only.
"""
import http.client
import json
import sys
import threading
import urllib.parse


def worker(url, host, password, names, failures, lock):
    u = urllib.parse.urlsplit(url)
    conn = None
    for name in names:
        body = json.dumps({"user": name, "host": host, "password": password})
        for attempt in range(3):
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
                conn.request("POST", u.path.rstrip("/") + "/register", body,
                             {"Content-Type": "application/json"})
                resp = conn.getresponse()
                text = resp.read().decode(errors="replace")
                if resp.status == 200 or "already registered" in text:
                    break
                if attempt == 2:
                    with lock:
                        failures.append("%s: HTTP %d %s" % (name, resp.status, text[:200]))
            except (OSError, http.client.HTTPException) as e:
                conn = None
                if attempt == 2:
                    with lock:
                        failures.append("%s: %s" % (name, e))


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    url, host, password = sys.argv[1:4]
    names = sys.argv[4:]
    if names == ["-"]:
        names = [line.strip() for line in sys.stdin if line.strip()]
    failures, lock = [], threading.Lock()
    threads = [threading.Thread(target=worker,
                                args=(url, host, password, names[i::4], failures, lock))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for f in failures[:10]:
        print("register failed: " + f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
