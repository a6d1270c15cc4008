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
GZ = gzip.compress(b"line 0001: the quick brown fox\n" * 20)
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
