#!/usr/bin/env python3
"""Writes the seed corpus of the XML reader's differential fuzz target
(corpus/xml_reader/): whole client streams, well-formed ones (ok-*) and
every malformation of issue 12 and RFC 6120 §11 (bad-*), in message bodies,
attribute values and names, before and after authentication. Run from
fuzz/; the files are committed, so rerun only to change the seeds (libFuzzer
may add its own entries beside them)."""
import os

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "xml_reader")
STREAMS = "http://etherx.jabber.org/streams"
H = {
    "c2s": f"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}' to='localhost' version='1.0' xml:lang='en'>",
    "c2sdq": f'<stream:stream xmlns="jabber:client" xmlns:stream="{STREAMS}" to="localhost" version="1.0">',
    "s2s": f"<stream:stream xmlns:stream='{STREAMS}' xmlns='jabber:server' xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>",
    "comp": f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='{STREAMS}' to='comp.localhost'>",
}

OK = {
    "starttls": "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
    "auth": "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFsaWNlAHNlY3JldA==</auth>",
    "scram": "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>biwsbj1hbGljZSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==</auth><response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9</response>",
    "register": "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'><username>bill</username><password>Calliope</password></query></iq>",
    "bind": "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>balcony</resource></bind></iq>",
    "session": "<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>",
    "roster-get": "<iq type='get' id='r1'><query xmlns='jabber:iq:roster' ver=''/></iq>",
    "roster-set": "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'><item jid='nurse@example.com' name='Nurse'><group>Servants</group></item></query></iq>",
    "chat": "<message to='bob@localhost' type='chat' id='m1' xml:lang='en'><body>Art thou not Romeo?</body><thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread></message>",
    "entities": "<message to='bob@localhost' type='chat'><body>a &lt; b &amp;&amp; c &gt; d &quot;q&quot; &apos;s&apos;</body></message>",
    "charrefs": "<message to='bob@localhost'><body>&#65;&#x42;&#x1F600;&#9;&#xA;&#xD;&#xE000;&#xFFFD;&#x10FFFF;</body></message>",
    "cdata": "<message to='bob@localhost'><body><![CDATA[<not> & a tag]]></body></message>",
    "unicode": "<message to='bob@localhost'><body>é 日本語 😀 \u007f \u0085 \u2028 \ufffd</body><subject xml:lang='fr'>Salut</subject></message>",
    "whitespace": "<message to='bob@localhost'><body>\t line one\r\n line two\n</body></message>",
    "xhtml": "<message to='bob@localhost'><body>hi</body><html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'><p style='font-weight:bold'>hi</p></body></html></message>",
    "prefixed": "<message to='bob@localhost'><x:x xmlns:x='jabber:x:oob'><x:url>http://example.com/a?b=1&amp;c=2</x:url></x:x></message>",
    "prefixed-attr": "<message to='bob@localhost' xmlns:e='urn:example' e:flag='yes'><e:info e:id='1'/></message>",
    "stream-prefix": "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
    "presence": "<presence><show>away</show><status>Out &amp; about</status><priority>5</priority><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://example.com' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>",
    "subscribe": "<presence to='juliet@example.com' type='subscribe'/>",
    "ping": "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>",
    "disco": "<iq type='get' id='d1' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info' node=''/></iq>",
    "pubsub": "<iq type='set' id='ps1'><pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='urn:xmpp:avatar:metadata'><item id='abc'><metadata xmlns='urn:xmpp:avatar:metadata'><info bytes='12345' id='abc' height='64' type='image/png' width='64'/></metadata></item></publish></pubsub></iq>",
    "mam": "<iq type='set' id='q1'><query xmlns='urn:xmpp:mam:2' queryid='f27'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field><field var='with'><value>juliet@capulet.lit</value></field></x><set xmlns='http://jabber.org/protocol/rsm'><max>10</max></set></query></iq>",
    "carbons": "<iq type='set' id='c1'><enable xmlns='urn:xmpp:carbons:2'/></iq>",
    "receipt": "<message to='bob@localhost' id='r9'><body>x</body><request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>",
    "sm": "<enable xmlns='urn:xmpp:sm:3' resume='true'/><r xmlns='urn:xmpp:sm:3'/><a xmlns='urn:xmpp:sm:3' h='1'/>",
    "attr-gt": "<message to='bob@localhost' id='a&gt;b&#x3C;c' type=\"chat\" x='he said \"hi\"' y=\"it's\"><body/></message>",
    "attr-space": "<message  to = 'bob@localhost'\n\tid='1' ><body>x</body ></message >",
    "empty-attr": "<message to='bob@localhost' id=''><body></body></message>",
    "xmlns-undeclare": "<message to='bob@localhost'><foo xmlns='urn:foo'><bar xmlns=''/></foo></message>",
    "nested": "<message to='bob@localhost'>" + "<x>" * 20 + "deep" + "</x>" * 20 + "</message>",
    "long-body": "<message to='bob@localhost'><body>" + "lorem ipsum " * 125 + "</body></message>",
    "many-attrs": "<message " + " ".join(f"a{i}='{i}'" for i in range(40)) + "/>",
    "keepalive": " \n <presence/>\n\n <presence/> \t",
    "dialback": "<db:result from='a.example' to='b.example'>b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3</db:result>",
    "component-handshake": "<handshake>aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e</handshake>",
    "names": "<message to='bob@localhost'><a-b.c_d xmlns='urn:n'><_x/><ÀéÿĀ/><a·b/><x\u0300/><日本/></a-b.c_d></message>",
    "end": "<presence/></stream:stream>",
}

BAD_CHARS = {
    "u0000": "\u0000", "u0001": "\u0001", "u0008": "\u0008", "u000b": "\u000b",
    "u000c": "\u000c", "u000e": "\u000e", "u001f": "\u001f", "ufffe": "\ufffe",
    "uffff": "\uffff",
}
BAD_BYTES = {
    "surrogate-utf8": b"\xed\xa0\x80", "overlong": b"\xc0\xbc", "past-10ffff": b"\xf4\x90\x80\x80",
    "lone-continuation": b"\x80", "ff": b"\xff", "truncated": b"\xe6\x97",
}
BAD_REFS = {
    "ref-0": "&#0;", "ref-1": "&#1;", "ref-x1": "&#x1;", "ref-8": "&#8;", "ref-xb": "&#xB;",
    "ref-x1f": "&#x1F;", "ref-xfffe": "&#xFFFE;", "ref-xffff": "&#xFFFF;", "ref-d800": "&#xD800;",
    "ref-dfff": "&#xDFFF;", "ref-110000": "&#x110000;", "ref-huge": "&#99999999999;",
    "ref-empty": "&#;", "ref-xempty": "&#x;", "ref-upper-x": "&#X41;", "ref-unterminated": "&#65",
    "ref-neg": "&#-1;", "entity-undefined": "&foo;", "amp-dangling": "&", "amp-space": "& ",
    "lt": "<", "cdata-end": "]]>", "comment": "<!-- c -->", "pi": "<?pi x?>",
}

def write(name, data):
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    with open(os.path.join(OUT, name + ".xml"), "wb") as f:
        f.write(data)

def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.startswith(("ok-", "bad-")):
            os.remove(os.path.join(OUT, f))
    for name, st in OK.items():
        write(f"ok-{name}", H["c2s"] + st)
    write("ok-session-c2s", H["c2sdq"] + OK["starttls"] + H["c2sdq"] + OK["auth"] + H["c2sdq"] + OK["bind"] + OK["presence"] + OK["chat"] + "</stream:stream>")
    write("ok-session-s2s", H["s2s"] + OK["dialback"] + "<message from='x@a.example' to='y@b.example'><body>hi</body></message></stream:stream>")
    write("ok-session-comp", H["comp"] + OK["component-handshake"] + "<message from='c@comp.localhost' to='y@localhost'><body>hi</body></message>")
    write("ok-bare", "\n " + H["c2sdq"])
    body = lambda x: b"<message to='bob@localhost' type='chat'><body>a" + x + b"b</body></message>"
    attr = lambda x: b"<message to='bob@localhost' id='a" + x + b"b'><body>x</body></message>"
    pre = lambda x: b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGFs" + x + b"aWNl</auth>"
    hdr = H["c2s"].encode()
    items = {k: v.encode("utf-8", "surrogatepass") for k, v in {**BAD_CHARS, **BAD_REFS}.items()}
    items.update(BAD_BYTES)
    for k, x in items.items():
        write(f"bad-body-{k}", hdr + body(x))
        write(f"bad-attr-{k}", hdr + attr(x))
        write(f"bad-preauth-{k}", hdr + pre(x))
        write(f"bad-later-{k}", hdr + OK["presence"].encode() + body(x) + b"<presence/>")
    for k, x in {**BAD_CHARS, **BAD_BYTES}.items():
        x = x.encode("utf-8", "surrogatepass") if isinstance(x, str) else x
        write(f"bad-elname-{k}", hdr + b"<mess" + x + b"age/>")
        write(f"bad-attrname-{k}", hdr + b"<message a" + x + b"b='1'/>")
    bad = {
        "attr-lt-cdata": "<message to='bob@localhost' x='<![CDATA[y]]>'/>",
        "attr-no-space": "<message a='1'b='2'/>",
        "attr-no-space-dq": "<message a=\"1\"b=\"2\"/>",
        "attr-dup": "<message a='1' a='2'/>",
        "attr-dup-expanded": "<message xmlns:p='urn:p' xmlns:q='urn:p' p:a='1' q:a='2'/>",
        "attr-unquoted": "<message a=1/>",
        "attr-novalue": "<message a/>",
        "attr-unterminated": "<message a='1/>",
        "attr-mixed-quotes": "<message a='1\"/>",
        "name-digit": "<1message/>",
        "name-dash": "<-message/>",
        "name-times": "<mes\u00d7sage/>",
        "name-two-colons": "<a:b:c xmlns:a='urn:a'/>",
        "name-colon-first": "<:message/>",
        "name-colon-last": "<message: xmlns:message='urn:m'/>",
        "attrname-digit": "<message 1a='x'/>",
        "attrname-colon-first": "<message :a='x'/>",
        "prefix-unbound": "<q:message/>",
        "attr-prefix-unbound": "<message q:a='1'/>",
        "prefix-undeclare": "<message xmlns:p=''/>",
        "xml-prefix-rebound": "<message xmlns:xml='urn:x'/>",
        "xmlns-prefix-declared": "<message xmlns:xmlns='urn:x'/>",
        "xml-ns-other-prefix": "<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>",
        "xmlns-ns-bound": "<message xmlns:p='http://www.w3.org/2000/xmlns/'/>",
        "xmlns-prefix-used": "<xmlns:message/>",
        "mismatch": "<message><body></message></body>",
        "end-unopened": "</message>",
        "text-at-stream-level": "hello<presence/>",
        "xml-decl-inside": "<?xml version='1.0'?><presence/>",
        "doctype-inside": "<!DOCTYPE x><presence/>",
        "comment-in-stanza": "<message><!-- c --></message>",
        "pi-in-stanza": "<message><?pi?></message>",
        "cdata-unterminated": "<message><body><![CDATA[x</body></message>",
        "lt-in-text": "<message><body>a < b</body></message>",
        "deep-300": "<message>" + "<a>" * 300 + "</a>" * 300 + "</message>",
        "attrs-300": "<message " + " ".join(f"a{i}=''" for i in range(300)) + "/>",
        "xmlns-200": "<message " + " ".join(f"xmlns:p{i}='urn:{i}'" for i in range(200)) + "/>",
        "attr-3000": "<message a='" + "x" * 3000 + "'/>",
        "siblings-600": "<message>" + "<a/>" * 600 + "</message>",
        "body-5000": "<message><body>" + "y" * 5000 + "</body></message>",
        "long-ns-children": "<message xmlns='urn:" + "n" * 1000 + "'>" + "<a/>" * 250 + "</message>",
    }
    for k, st in bad.items():
        write(f"bad-{k}", H["c2s"] + st)
        write(f"bad-preauth-{k}", H["c2sdq"] + OK["starttls"] + st)
    streams = {
        "doctype": f"<!DOCTYPE stream [<!ENTITY e 'x'>]><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "header-closed": f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'/>",
        "header-no-ws": f"<stream:stream xmlns='jabber:client'xmlns:stream='{STREAMS}'>",
        "header-unbound": "<stream:stream xmlns='jabber:client'>",
        "header-u0001": f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}' to='local\u0001host'>",
        "header-ref": f"<stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}' to='local&#xFFFE;host'>",
        "decl-utf16": f"<?xml version='1.0' encoding='UTF-16'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "decl-after-ws": f" <?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "decl-bad": f"<?xml version='1.0' foo='bar'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "decl-11": f"<?xml version='1.1'?><stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "text-before": f"hi<stream:stream xmlns='jabber:client' xmlns:stream='{STREAMS}'>",
        "two-headers": H["c2s"] + H["c2s"],
        "end-mismatch": H["c2s"] + "<presence/></stream:other>",
        "bom": "\ufeff" + H["c2sdq"] + "<presence/>",
    }
    for k, s in streams.items():
        write(f"bad-stream-{k}", s)

main()
