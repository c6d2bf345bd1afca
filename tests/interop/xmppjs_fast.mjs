// xmpp.js (@xmpp/client, an independent SASL2/Bind 2/FAST implementation)
// against Rookery: a first login with the password over SASL2 (SCRAM),
// Bind 2 and a FAST token request; a second login with the saved token
// and a wrong password, which can only succeed through HT-SHA-256-NONE.
// Prints one JSON line per step; exits non-zero on any failure.
//
// Usage: node xmppjs_fast.mjs <fixture node_modules dir> <port> <user> <password>

import { createRequire } from "node:module";
import path from "node:path";

const [modules, port, user, password] = process.argv.slice(2);
const require = createRequire(path.join(modules, "x.js"));
const { client, xml } = await import(require.resolve("@xmpp/client"));

const userAgentId = "6b1f3f5e-6c59-4b36-9a43-2b7d1f1d8c11";
let saved = null;

function connect(pass, token) {
  const xmpp = client({
    service: `xmpp://127.0.0.1:${port}`,
    domain: "localhost",
    username: user,
    password: pass,
    resource: "xmppjs",
    userAgent: xml(
      "user-agent",
      { id: userAgentId },
      xml("software", {}, "xmpp.js"),
    ),
  });
  xmpp.reconnect.stop();
  xmpp.fast.saveToken = async (t) => {
    saved = t;
  };
  xmpp.fast.fetchToken = async () => token;
  return xmpp;
}

async function step(name, pass, token) {
  const xmpp = connect(pass, token);
  const errors = [];
  xmpp.on("error", (e) => errors.push(String(e?.condition ?? e)));
  const online = new Promise((resolve, reject) => {
    xmpp.on("online", resolve);
    setTimeout(() => reject(new Error(`${name}: not online in 20 s: ${errors}`)), 20000);
  });
  await xmpp.start();
  const jid = (await online).toString();
  const pong = await xmpp.iqCaller.request(
    xml("iq", { type: "get", to: "localhost" }, xml("ping", { xmlns: "urn:xmpp:ping" })),
  );
  const out = {
    step: name,
    jid,
    ping: pong.attrs.type,
    sm: xmpp.streamManagement.enabled === true,
    token: saved ? { mechanism: saved.mechanism, expiry: saved.expiry } : null,
    errors,
  };
  console.log(JSON.stringify(out));
  await xmpp.stop();
  return out;
}

try {
  await step("password", password, null);
  if (!saved) throw new Error("no FAST token saved after the first login");
  const token = saved;
  saved = null;
  await step("fast", "not-the-password", token);
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
