#!/usr/bin/env python3
"""Writes the seed corpus of hookgate's fuzz targets to fuzz/corpus/<target>/.

Run from anywhere: python3 fuzz/make_seeds.py. Seeds are small, named for
what they are, and deterministic; libFuzzer grows its own corpus elsewhere
(see SECURITY.md for the commands). The pipeline input format is documented
in fuzz/src/lib.rs (`decode`): [flags][n] then n x ([len][name][len][value]),
then the body.
"""
import base64
import hashlib
import hmac
import os

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
# Must match fuzz/src/lib.rs.
SECRET = b"whsec-fuzz-current-0123456789"
SECRET_OLD = b"whsec-fuzz-previous-9876543210"


def body_of(event, with_visitor=True, **extra):
    v = ""
    if event == "popup.converted" and with_visitor:
        v = (',"visitor":{"email":"jane@example.com","fields":'
             '{"name":"Jane Smith","email":"jane@example.com"}}')
    more = "".join(f',"{k}":{val}' for k, val in extra.items())
    return (
        f'{{"event":"{event}","campaign_id":"camp_abc123",'
        f'"campaign_name":"Summer Sale Popup","timestamp":"2026-04-26T12:00:00Z"{v},'
        f'"page_url":"https://yoursite.com/products/summer-sale"{more}}}'
    ).encode()


EXAMPLE = body_of("popup.converted")  # the spec's example, compact

PAYLOADS = {
    "spec-example-pretty.json": b"""{
  "event": "popup.converted",
  "campaign_id": "camp_abc123",
  "campaign_name": "Summer Sale Popup",
  "timestamp": "2026-04-26T12:00:00Z",
  "visitor": {
    "email": "jane@example.com",
    "fields": { "name": "Jane Smith", "email": "jane@example.com" }
  },
  "page_url": "https://yoursite.com/products/summer-sale"
}
""",
    "converted.json": EXAMPLE,
    "shown.json": body_of("popup.shown"),
    "clicked.json": body_of("popup.clicked"),
    "closed.json": body_of("popup.closed"),
    "shown-with-visitor.json": body_of("popup.shown",
                                      visitor='{"email":"a@b.co","fields":{"n":[1,true,null,"x"]}}'),
    "converted-no-visitor.json": body_of("popup.converted", with_visitor=False),
    "unknown-fields.json": body_of("popup.clicked", extra='{"deep":[{"a":{"b":[]}}]}', n="1.5e3"),
    "offset-timestamp.json": body_of("popup.shown").replace(b"Z\"", b"+05:30\""),
    "bad-timestamp.json": body_of("popup.shown").replace(b"2026-04-26T12:00:00Z", b"2026-13-40 25:00"),
    "bad-url.json": body_of("popup.shown").replace(b"https://yoursite.com", b"ftp://x"),
    "bad-email.json": EXAMPLE.replace(b'"email":"jane@example.com","fields"', b'"email":"jane","fields"'),
    "field-object.json": EXAMPLE.replace(b'"name":"Jane Smith"', b'"name":{"x":1}'),
    "escaped-key.json": EXAMPLE.replace(b'"name":"Jane Smith"', b'"a/b~c":{"x":1}'),
    "unknown-event.json": body_of("popup.exploded"),
    "empty-campaign.json": body_of("popup.shown").replace(b"camp_abc123", b""),
    "escaped-strings.json": body_of("popup.shown").replace(b"camp_abc123", b"camp_\\u00e9\\n"),
    "duplicate-key.json": b'{"event":"popup.shown","event":"popup.closed"}',
    "duplicate-nested.json": b'{"a":{"b":1,"b":2}}',
    "lone-surrogate.json": b'{"a":"\\ud800"}',
    "invalid-utf8.json": b'{"a":"\xff\xfe"}',
    "not-object.json": b'["popup.shown"]',
    "deep.json": b"[" * 200,
    "huge-number.json": b'{"x":1e99999}',
    "trailing.json": EXAMPLE + b" {}",
    "empty.json": b"",
    "types-wrong.json": b'{"event":1,"campaign_id":[],"campaign_name":null,"timestamp":{},"page_url":true,"visitor":"x"}',
}


def mac(key, body):
    return hmac.new(key, body, hashlib.sha256).digest()


SIGNATURES = {
    "hex-lower": mac(SECRET, EXAMPLE).hex().encode(),
    "hex-upper": mac(SECRET, EXAMPLE).hex().upper().encode(),
    "hex-prefixed": b"sha256=" + mac(SECRET, EXAMPLE).hex().encode(),
    "base64-padded": base64.b64encode(mac(SECRET, EXAMPLE)),
    "base64-unpadded": base64.b64encode(mac(SECRET, EXAMPLE)).rstrip(b"="),
    "hex-truncated": mac(SECRET, EXAMPLE).hex()[:63].encode(),
    "hex-doubled": (mac(SECRET, EXAMPLE).hex() * 2).encode(),
    "prefix-wrong-case": b"SHA256=" + mac(SECRET, EXAMPLE).hex().encode(),
    "padded-space": b" " + mac(SECRET, EXAMPLE).hex().encode() + b" ",
    "base64-urlsafe": base64.urlsafe_b64encode(mac(SECRET, EXAMPLE)),
    "empty": b"",
}


def pipeline_input(flags, headers, body):
    out = bytearray([flags, len(headers)])
    for name, value in headers:
        out += bytes([len(name)]) + name + bytes([len(value)]) + value
    return bytes(out) + body


# flags: & 7 signing (0 current, 1 previous, 2 raw, 3 missing, 4 repeated,
# 5 tampered, 6 wrong secret, 7 padded); (>> 3) % 3 route (0 hex, 1 base64,
# 2 shadow); & 0x40 trusted proxy.
SPOOF = [
    (b"content-type", b"application/json"),
    (b"x-webhook-verified", b"true"),
    (b"X-Webhook-Event", b"popup.converted"),
    (b"connection", b"x-secret, keep-alive"),
    (b"x-secret", b"1"),
    (b"transfer-encoding", b"chunked"),
    (b"x-forwarded-for", b"10.0.0.1"),
    (b"forwarded", b"for=1.2.3.4"),
    (b"x-request-id", b"req-123"),
    (b"?", b"a=1&b=%20"),
]
PIPELINE = {}
for signing in range(8):
    for route in range(3):
        flags = signing | (route << 3)
        PIPELINE[f"s{signing}-r{route}-converted"] = pipeline_input(
            flags, [(b"content-type", b"application/json")], EXAMPLE)
PIPELINE["spoofed-headers"] = pipeline_input(0, SPOOF, EXAMPLE)
PIPELINE["spoofed-headers-trusted"] = pipeline_input(0x40, SPOOF, body_of("popup.shown"))
PIPELINE["shadow-spoofed"] = pipeline_input(2 << 3 | 5, SPOOF, EXAMPLE)
PIPELINE["raw-valid"] = pipeline_input(
    2, [(b"x-coolpopup-signature", mac(SECRET, EXAMPLE).hex().encode())], EXAMPLE)
PIPELINE["raw-valid-base64"] = pipeline_input(
    2 | 1 << 3, [(b"X-CoolPopup-Signature", base64.b64encode(mac(SECRET, body_of("popup.closed"))))],
    body_of("popup.closed"))
PIPELINE["raw-repeated"] = pipeline_input(
    2, [(b"x-coolpopup-signature", mac(SECRET, EXAMPLE).hex().encode())] * 2, EXAMPLE)
PIPELINE["event-not-allowed-b64"] = pipeline_input(1 << 3, [], body_of("popup.shown"))
PIPELINE["bad-json"] = pipeline_input(0, [], b'{"event":"popup.shown","event":1}')
PIPELINE["schema-422"] = pipeline_input(0, [], PAYLOADS["types-wrong.json"])
PIPELINE["campaign-id-non-ascii"] = pipeline_input(
    0, [], body_of("popup.shown").replace(b"camp_abc123", "caf\u00e9".encode()))
PIPELINE["empty"] = b""

# upstream_answer: [first byte: step (low 4 bits + 1) and body limit
# (16 x high 4 bits)] then what the app sent back.
ANSWERS = {
    "length": b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
    "chunked-trailers": b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: gzip, chunked\r\nRetry-After: 7\r\n\r\n4;x=y\r\nabcd\r\n3\r\nefg\r\n0\r\nX-T: 1\r\n\r\n",
    "until-close-http10": b"HTTP/1.0 200 OK\r\n\r\nhello",
    "keep-alive-http10": b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
    "interim": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\nok",
    "conflicting-lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "both-framings": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "pipelined-extra": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    "switching": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
}
ANSWERS = {name: bytes([(i * 37) % 256]) + wire for i, (name, wire) in enumerate(ANSWERS.items())}

for target, seeds in [
    ("upstream_answer", ANSWERS),
    ("payload", PAYLOADS),
    ("signature_header", SIGNATURES),
    ("pipeline", PIPELINE),
]:
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seeds)} seeds in {os.path.relpath(d)}")
