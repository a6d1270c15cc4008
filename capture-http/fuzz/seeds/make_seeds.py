#!/usr/bin/env python3
"""Writes the committed seed corpora of the fuzz targets (`cargo xtask test` runs every seed,
then fuzzes from them). Run it again after changing the input layout of a target:

    python3 capture-http/fuzz/seeds/make_seeds.py

Layout of every input (see fuzz_targets/*.rs): flags, n, n little-endian u16 split points, u16
length of the first stream, the first stream (request / client), the second (response / server).
"""
import gzip
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def pack(flags, splits, first, second):
    out = bytes([flags, len(splits)])
    out += b"".join(struct.pack("<H", s) for s in splits)
    return out + struct.pack("<H", len(first)) + first + second


def write(target, name, data):
    os.makedirs(os.path.join(HERE, target), exist_ok=True)
    with open(os.path.join(HERE, target, name), "wb") as f:
        f.write(data)


# HTTP/1 ---------------------------------------------------------------------------------
GET = b"GET /json?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: seed\r\nAccept: */*\r\n\r\n"
JSON = b'{"message":"hello"}'
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(JSON),
    JSON,
)
POST = b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"password\":\"x\"}"
CHUNKED_REQ = b"PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
CHUNKED_RESP = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: s=1\r\n\r\nb\r\ncookie set\n\r\n0\r\n\r\n"
GZ = gzip.compress(b"line 0001: the quick brown fox\n" * 20, mtime=0)
GZ_RESP = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(GZ), GZ)
HEAD = b"HEAD /big HTTP/1.1\r\nHost: a\r\n\r\n"
HEAD_RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\n\r\n"
CONTINUE_REQ = b"POST /c HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc"
CONTINUE_RESP = b"HTTP/1.1 100 Continue\r\n\r\n" + b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
UPGRADE_REQ = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
UPGRADE_RESP = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"
CLOSE_DELIMITED = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
BAD = b"GET /x HTTP/1.1\r\nHost a\r\n\r\nGARBAGE\r\n\r\n"

write("http1", "get-json", pack(0, [], GET, OK))
write("http1", "get-json-split", pack(0, [1, 7, 30, 31, 60], GET, OK))
write("http1", "post-small-limits", pack(1, [10], POST, OK))
write("http1", "chunked-both", pack(0, [3, 40], CHUNKED_REQ, CHUNKED_RESP))
write("http1", "gzip", pack(0, [100], GET, GZ_RESP))
write("http1", "pipelined-head-204", pack(0, [], HEAD + GET + GET, HEAD_RESP + NO_CONTENT + OK))
write("http1", "continue", pack(0, [], CONTINUE_REQ, CONTINUE_RESP))
write("http1", "upgrade-h2c", pack(0, [], UPGRADE_REQ, UPGRADE_RESP))
write("http1", "http10-close", pack(0, [], b"GET / HTTP/1.0\r\n\r\n", CLOSE_DELIMITED))
write("http1", "gaps-flushes", pack(2 | 4, [5, 9, 21, 33, 50], GET + POST, OK + OK))
write("http1", "response-first", pack(8, [4], GET, OK))
write("http1", "malformed", pack(0, [], BAD, b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))

# HTTP/2 ---------------------------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST, SETTINGS, PING, GOAWAY, WINDOW, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 1, 4, 1


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack_int(value, prefix_bits, first):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append(value % 128 + 128)
        value //= 128
    out.append(value)
    return bytes(out)


def literal(name, value, indexing=True):
    # Literal with a new name, incremental indexing (0x40) or without indexing (0x00), no Huffman.
    out = bytes([0x40 if indexing else 0x00])
    out += hpack_int(len(name), 7, 0) + name
    return out + hpack_int(len(value), 7, 0) + value


def indexed(index):
    return hpack_int(index, 7, 0x80)


def block(*fields):
    return b"".join(fields)


REQ = block(indexed(2), indexed(6), indexed(4), literal(b":authority", b"a"), literal(b"x-secret", b"s"))  # GET http /
REQ_AGAIN = block(indexed(2), indexed(6), indexed(4), indexed(63), indexed(62))  # the dynamic table
RESP = block(indexed(8), literal(b"content-type", b"text/plain"))  # :status 200
GRPC_REQ = block(
    indexed(3),  # POST
    indexed(6),
    literal(b":path", b"/echo.Echo/Say", False),
    literal(b":authority", b"a"),
    literal(b"content-type", b"application/grpc"),
    literal(b"te", b"trailers"),
)
GRPC_MSG = b"\x00" + struct.pack(">I", 5) + b"hello"
GRPC_TRAILERS = block(literal(b"grpc-status", b"0"), literal(b"grpc-message", b"ok"))

client = PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, END_STREAM | END_HEADERS, 1, REQ)
client += frame(SETTINGS, ACK, 0, b"") + frame(HEADERS, END_STREAM | END_HEADERS, 3, REQ_AGAIN)
server = frame(SETTINGS, 0, 0, struct.pack(">HI", 4, 65535)) + frame(SETTINGS, ACK, 0, b"")
server += frame(HEADERS, END_HEADERS, 1, RESP) + frame(DATA, END_STREAM, 1, b"hello")
server += frame(HEADERS, END_HEADERS, 3, RESP) + frame(DATA, 0, 3, b"wor") + frame(DATA, END_STREAM, 3, b"ld")
write("http2", "get-two-streams", pack(0, [], client, server))
write("http2", "get-two-streams-split", pack(0, [9, 24, 33, 70, 71], client, server))
write("http2", "preface-flag", pack(16, [], client[len(PREFACE):], server))
write("http2", "small-limits-gaps", pack(1 | 2 | 4, [13, 40, 77], client, server))
write("http2", "mid-stream-undecided", pack(64, [20], client[len(PREFACE) + 9:], server))

grpc_client = PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, END_HEADERS, 1, GRPC_REQ)
grpc_client += frame(DATA, END_STREAM, 1, GRPC_MSG)
grpc_server = frame(SETTINGS, 0, 0, b"") + frame(HEADERS, END_HEADERS, 1, block(indexed(8), literal(b"content-type", b"application/grpc")))
grpc_server += frame(DATA, 0, 1, GRPC_MSG) + frame(HEADERS, END_STREAM | END_HEADERS, 1, GRPC_TRAILERS)
write("http2", "grpc-unary", pack(0, [], grpc_client, grpc_server))

# A header block split over CONTINUATION, a RST_STREAM, a PING, WINDOW_UPDATE and GOAWAY.
cont_client = PREFACE + frame(SETTINGS, 0, 0, b"") + frame(HEADERS, 0, 1, REQ[:5]) + frame(CONTINUATION, END_HEADERS, 1, REQ[5:])
cont_client += frame(WINDOW, 0, 0, struct.pack(">I", 1 << 20)) + frame(PING, 0, 0, b"12345678") + frame(RST, 0, 1, struct.pack(">I", 8))
cont_server = frame(SETTINGS, 0, 0, b"") + frame(PING, ACK, 0, b"12345678") + frame(GOAWAY, 0, 0, struct.pack(">II", 1, 0))
write("http2", "continuation-rst-goaway", pack(0, [], cont_client, cont_server))

# h2_frames ------------------------------------------------------------------------------
# Layout: flags, u16 length of the client frames (the target adds the preface), the client
# frames, the server frames.


def frames_input(flags, client, server):
    if client.startswith(PREFACE):
        client = client[len(PREFACE):]
    return bytes([flags]) + struct.pack("<H", len(client)) + client + server


PRIORITY, PUSH_PROMISE, PADDED, PRIO_FLAG = 2, 5, 0x8, 0x20
write("h2_frames", "get-two-streams", frames_input(0, client, server))
write("h2_frames", "get-two-streams-small", frames_input(1 | 6, client, server))
write("h2_frames", "grpc-unary", frames_input(8, grpc_client, grpc_server))
write("h2_frames", "continuation-rst-goaway", frames_input(10, cont_client, cont_server))
padded = frame(SETTINGS, 0, 0, struct.pack(">HIHI", 1, 8192, 5, 32768))
padded += frame(HEADERS, END_HEADERS | PADDED | PRIO_FLAG, 1, bytes([3]) + struct.pack(">IB", 0, 15) + REQ + b"\0\0\0")
padded += frame(PRIORITY, 0, 1, struct.pack(">IB", 0, 200))
padded += frame(DATA, PADDED, 1, bytes([2]) + b"body" + b"\0\0") + frame(DATA, END_STREAM, 1, b"")
push_server = frame(SETTINGS, 0, 0, b"") + frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + REQ_AGAIN[:3])
push_server += frame(HEADERS, END_HEADERS | END_STREAM, 1, RESP) + frame(HEADERS, END_HEADERS, 2, RESP)
push_server += frame(DATA, END_STREAM, 2, b"pushed") + frame(0x42, 0xff, 7, b"unknown type")
write("h2_frames", "padded-priority-push", frames_input(12, padded, push_server))

# hpack ----------------------------------------------------------------------------------
# Layout: flags, u16 table cap, then blocks (u16 length, bytes). Seeds: every sequence of
# RFC 7541 Appendix C (taken from the decoder's own tests), and blocks of the seeds above.
import re

tests = open(os.path.join(HERE, "../../src/http2/hpack/tests.rs")).read()


def sequence(fn):
    body = tests[tests.index("fn " + fn):]
    body = body[: body.index("\n}\n")]
    wires = re.findall(r'wire:\s*"((?:[^"\\]|\\\n)*)"', body)
    return [bytes.fromhex(re.sub(r"[^0-9a-fA-F]", "", w)) for w in wires]


def hpack_input(flags, cap, blocks):
    return bytes([flags]) + struct.pack("<H", cap) + b"".join(struct.pack("<H", len(b)) + b for b in blocks)


C2 = [
    "400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572",
    "040c 2f73 616d 706c 652f 7061 7468",
    "1008 7061 7373 776f 7264 0673 6563 7265 74",
    "82",
]
write("hpack", "rfc7541-c2", hpack_input(0, 4096, [bytes.fromhex(c.replace(" ", "")) for c in C2]))
write("hpack", "rfc7541-c3", hpack_input(0, 4096, sequence("c3_requests_without_huffman")))
write("hpack", "rfc7541-c4", hpack_input(2, 4096, sequence("c4_requests_with_huffman")))
# C.5/C.6 run with SETTINGS_HEADER_TABLE_SIZE 256: a size update to 256 opens the sequence.
write("hpack", "rfc7541-c5", hpack_input(0, 4096, [b"\x3f\xe1\x01" + sequence("c5_responses_without_huffman_with_eviction")[0]] + sequence("c5_responses_without_huffman_with_eviction")[1:]))
write("hpack", "rfc7541-c6-cap-256", hpack_input(6, 256, sequence("c6_responses_with_huffman_with_eviction")))
write("hpack", "rfc7541-c3-unknown-table", hpack_input(1 | 8, 4096, sequence("c3_requests_without_huffman")))
write("hpack", "seed-blocks", hpack_input(0, 64, [REQ, REQ_AGAIN, RESP, GRPC_REQ, GRPC_TRAILERS]))

# body -----------------------------------------------------------------------------------
# Layout: coding (encoder of the round trip: 0 gzip, 1 zlib, 2 raw deflate, 3 br, 4 zstd,
# 5 two gzip members, 6 gzip then br), flags (low bits: Content-Encoding of the payload taken
# as it is, see CODINGS in body.rs; 0x80: cut short; low 6 bits also the piece size), u16
# cap, u16 cut point, u16 chunking seed, payload.
import subprocess
import zlib


def body_input(coding, flags, cap, cut, seed, payload):
    return bytes([coding, flags]) + struct.pack("<HHH", cap, cut, seed) + payload


TEXT = b"".join(b"line %04d: the quick brown fox\n" % i for i in range(40))
JSON_BODY = b'{"user":"ann","password":"hunter2","items":[1,2,3],"nested":{"token":"t"}}'
BR_TEXT = bytes.fromhex(re.sub(r"[^0-9a-f]", "", re.search(r'fn br_text\(\) -> Vec<u8> \{\s*hex\(concat!\(((?:\s*"[0-9a-f]*",?)*)', open(os.path.join(HERE, "../../src/body.rs")).read()).group(1)))
ZSTD_TEXT = subprocess.run(["zstd", "-q", "-c", "-3"], input=TEXT, stdout=subprocess.PIPE, check=True).stdout
raw_deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
RAW_DEFLATE = raw_deflate.compress(JSON_BODY) + raw_deflate.flush()
# CODINGS in body.rs: 0 gzip, 1 deflate, 2 br, 3 zstd, 4 identity, 5 "gzip, deflate",
# 6 "br, zstd, gzip", 7 compress.
write("body", "gzip-text", body_input(0, 0, 4096, 100, 7, gzip.compress(TEXT, mtime=0)))
write("body", "zlib-json", body_input(1, 1, 4096, 30, 9, zlib.compress(JSON_BODY)))
write("body", "raw-deflate-json", body_input(2, 1, 50, 10, 3, RAW_DEFLATE))
write("body", "br-text", body_input(3, 2, 4096, 60, 11, BR_TEXT))
write("body", "zstd-text", body_input(4, 3, 4096, 20, 5, ZSTD_TEXT))
write("body", "identity-json-cap", body_input(5, 4, 20, 5, 1, JSON_BODY))
write("body", "stacked-gzip-deflate", body_input(6, 5, 4096, 40, 13, zlib.compress(gzip.compress(JSON_BODY, mtime=0))))
write("body", "unknown-coding", body_input(0, 7 | 0x80, 4096, 0, 2, JSON_BODY))
write("body", "empty", body_input(4, 0, 0, 0, 1, b""))

# har_read -------------------------------------------------------------------------------
# Entries as the project's HAR writer writes them: the golden entry of docs/output-schema.md
# (written by capture-model's writer, checked by its tests), also as a whole HAR file, and
# variants (HTTP/2, gRPC, base64 body, incomplete) derived from it.
import json

doc = open(os.path.join(HERE, "../../../docs/output-schema.md")).read()
golden = next(l for l in doc.splitlines() if l.startswith('{"startedDateTime"'))
write("har_read", "golden-line", golden.encode() + b"\n")
write("har_read", "golden-har-file", ('{"log":{"version":"1.2","creator":{"name":"capture","version":"0"},"entries":[' + golden + "," + golden + "]}}\n").encode())
e = json.loads(golden)
e["request"]["httpVersion"] = "HTTP/2"
e["response"]["httpVersion"] = "HTTP/2"
e["_capture"]["protocol"] = "h2"
e["response"]["content"] = {"size": 4, "mimeType": "application/octet-stream", "text": "AAECAw==", "encoding": "base64"}
write("har_read", "h2-base64", (json.dumps(e, separators=(",", ":")) + "\n" + golden + "\n").encode())
e = json.loads(golden)
e["_capture"]["incomplete"] = "flushed"
e["_capture"]["truncated"] = {"request": True, "response": True}
write("har_read", "incomplete-truncated", (json.dumps(e, separators=(",", ":")) + "\n").encode())
browser = json.loads(golden)
del browser["_capture"]
del browser["connection"]
write("har_read", "browser-entry", json.dumps({"log": {"version": "1.2", "creator": {"name": "browser", "version": "1"}, "entries": [browser]}}).encode())
