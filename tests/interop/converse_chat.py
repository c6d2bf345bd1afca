"""Converse.js in Debian's Chromium (headless, driven by Selenium through
Debian's chromedriver) against Rookery's WebSocket endpoint (--ws-url) or
its BOSH endpoint (--bosh-url): alice logs in over wss:// or https://
BOSH, sees bob (a slixmpp client over STARTTLS) online in her
roster, sends him a message typed into the chat box and sees his answer;
then the page's browser storage is cleared and the page reloaded, and
the conversation comes back from the server's archive (XEP-0313).
Screenshots go to --artifacts, named with --shot-prefix.

Nothing is downloaded: Selenium is pointed at /usr/bin/chromium and
/usr/bin/chromedriver (SE_OFFLINE keeps Selenium Manager offline), and
Converse.js comes from the npm fixture directory given as --dist. The
server's certificate is self-signed: Chromium runs with
--ignore-certificate-errors, and the page only ever talks to loopback.
"""

import asyncio
import functools
import http.server
import os
import shutil
import tempfile
import threading

import harness
from harness import check, fail, step

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Rookery + Converse.js</title>
<link rel="stylesheet" href="dist/converse.min.css"></head>
<body class="converse-fullscreen">
<script type="module">
import converse from './dist/converse.min.js';
converse.plugins.add('rookery-test', {
  initialize() { window.rookery = this._converse; }
});
converse.initialize({
  assets_path: 'dist/',
  CONNECTION,
  discover_connection_methods: false,
  auto_login: true,
  jid: 'ALICE',
  password: 'PASSWORD',
  view_mode: 'fullscreen',
  persistent_store: 'localStorage',
  message_archiving: 'always',
  play_sounds: false,
  show_desktop_notifications: false,
  whitelisted_plugins: ['rookery-test'],
  blacklisted_plugins: ['converse-omemo'],
  loglevel: 'info',
});
</script></body></html>
"""


class Bob(harness.Client):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.messages = asyncio.Queue()
        self.add_event_handler("message", lambda m: self.messages.put_nowait(m))

    async def on_session(self):
        self.send_presence()
        await self.get_roster()


def serve_page(root):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=root)
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def browser(profile):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu",
              "--disable-dev-shm-usage", "--ignore-certificate-errors",
              "--window-size=1280,900", f"--user-data-dir={profile}"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(service=service, options=opts)


async def in_thread(f, *a):
    return await asyncio.get_running_loop().run_in_executor(None, f, *a)


async def until(driver, js, what, timeout=30):
    """Poll the page's JavaScript expression `js` until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            v = await in_thread(driver.execute_script, js)
        except Exception:  # noqa: BLE001 - page still loading
            v = None
        if v:
            return v
        await asyncio.sleep(0.3)
    body = await in_thread(driver.execute_script, "return document.body && document.body.innerText")
    try:
        console = [e.get("message", "") for e in await in_thread(driver.get_log, "browser")][-30:]
    except Exception:  # noqa: BLE001 - diagnostics only
        console = []
    fail(f"{what} (page text: {str(body)[:1500]!r}; console: {console})")


LOGGED_IN = "return !!(window.rookery && window.rookery.api.connection.connected() && window.rookery.state && window.rookery.state.roster)"
BOB_ONLINE = """
// The roster entry Converse.js renders for a contact, with its status.
const li = [...document.querySelectorAll('li.current-xmpp-contact')]
  .find(e => e.innerText.includes('Bob'));
const status = li && li.getAttribute('data-status');
return status && status !== 'offline' && status !== 'unavailable' ? status : null;
"""


CLEAR_STORAGE = """
const done = arguments[arguments.length - 1];
localStorage.clear(); sessionStorage.clear();
indexedDB.databases().then(dbs => Promise.all(dbs.map(d => new Promise(r => {
  const q = indexedDB.deleteDatabase(d.name); q.onsuccess = q.onerror = q.onblocked = r;
})))).then(() => done(true), () => done(false));
"""


def page_has(text):
    return f"return document.body.innerText.includes({text!r})"


async def run(args):
    root = tempfile.mkdtemp(prefix="converse-page-")
    profile = tempfile.mkdtemp(prefix="converse-profile-")
    os.symlink(args.dist, os.path.join(root, "dist"))
    if args.bosh_url:
        connection, transport = f"bosh_service_url: {args.bosh_url!r}", "BOSH"
    else:
        connection, transport = f"websocket_url: {args.ws_url!r}", "WebSocket"
    with open(os.path.join(root, "index.html"), "w") as f:
        f.write(PAGE.replace("CONNECTION", connection).replace("ALICE", args.jid1)
                .replace("PASSWORD", args.password1))
    shot = lambda name: os.path.join(args.artifacts, f"{args.shot_prefix}-{name}.png")
    with open(os.path.join(root, "blank.html"), "w") as f:
        f.write("<!DOCTYPE html><title>blank</title>")
    httpd = serve_page(root)
    url = f"http://127.0.0.1:{httpd.server_address[1]}/index.html"
    os.makedirs(args.artifacts, exist_ok=True)
    bob = Bob(args.jid2, args.password2, args.host, args.port)
    driver = None
    try:
        await bob.start()
        step("bob online (slixmpp)")
        driver = await in_thread(browser, profile)
        await in_thread(driver.get, url)
        await until(driver, LOGGED_IN, f"Converse.js did not log in over {transport}", 40)
        service = await in_thread(driver.execute_script,
                                  "const c = window.rookery.api.connection.get();"
                                  " return [c.service, !!(c._proto && c._proto.sid)];")
        want = args.bosh_url or args.ws_url
        check(service[0] == want, f"Converse.js connected to {service[0]}, not {want}")
        # A BOSH connection has a session id; a WebSocket one has none.
        check(service[1] == bool(args.bosh_url), f"transport is not {transport} ({service})")
        step(f"alice logged in with Converse.js over {transport} ({service[0]})")
        status = await until(driver, BOB_ONLINE, "bob not shown online in alice's roster")
        step(f"bob shown in the roster, status {status}")

        # alice opens the chat and types a message.
        await in_thread(driver.execute_script,
                        f"window.rookery.api.chats.open({args.jid2!r}, {{}}, true); return true")
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        await until(driver, "return !!document.querySelector('textarea.chat-textarea')",
                    "no chat box")
        area = await in_thread(driver.find_element, By.CSS_SELECTOR, "textarea.chat-textarea")
        await in_thread(area.send_keys, "hello from a browser")
        await in_thread(area.send_keys, Keys.ENTER)
        m = await harness.next_matching(
            bob.messages, lambda m: m["body"] == "hello from a browser", 20,
            "bob did not get alice's message")
        check(str(m["from"].bare) == args.jid1, f"message from {m['from']}")
        step("bob got the message typed in Converse.js")
        bob.send_message(mto=args.jid1, mbody="hello back from slixmpp", mtype="chat")
        await until(driver, page_has("hello back from slixmpp"), "bob's answer not shown")
        step("alice sees bob's answer")
        await in_thread(driver.save_screenshot, shot("chat"))

        # Forget everything the browser kept (from a page of the same origin
        # without Converse.js), reload: the history must come from MAM.
        await in_thread(driver.get, url.replace("index.html", "blank.html"))
        await in_thread(driver.execute_async_script, CLEAR_STORAGE)
        await in_thread(driver.get, url)
        await until(driver, LOGGED_IN, "Converse.js did not log in again after the reload", 40)
        shown = await in_thread(driver.execute_script, page_has("hello back from slixmpp"))
        check(not shown, "the old conversation is still on the page before any archive query")
        await in_thread(driver.execute_script,
                        f"window.rookery.api.chats.open({args.jid2!r}, {{}}, true); return true")
        await until(driver, page_has("hello from a browser"), "alice's message not loaded from MAM")
        await until(driver, page_has("hello back from slixmpp"), "bob's answer not loaded from MAM")
        archived = await until(driver, f"""
const chat = window.rookery.state.chatboxes.get({args.jid2!r});
return chat ? chat.messages.filter(m => m.get('is_archived')).length : 0;
""", "the messages shown are not marked as fetched from the archive")
        check(archived >= 2, f"{archived} archived messages")
        step(f"history loaded from MAM after the reload ({archived} archived messages)")
        await in_thread(driver.save_screenshot, shot("mam"))
        harness.ok("converse")
    finally:
        if driver is not None:
            try:
                await in_thread(driver.save_screenshot,
                                shot("last"))
            except Exception:  # noqa: BLE001 - best effort
                pass
            await in_thread(driver.quit)
        httpd.shutdown()
        await harness.disconnect_all(bob)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("SE_OFFLINE", "true")
    p = harness.parser(__doc__, accounts=2)
    p.add_argument("--ws-url")
    p.add_argument("--bosh-url")
    p.add_argument("--shot-prefix", default="converse")
    p.add_argument("--dist", required=True)
    p.add_argument("--artifacts", required=True)
    harness.main(run, p, 170)
