#!/usr/bin/env python3
"""Writes the hand-made seed inputs in seeds/<target>/ (run from anywhere; python3 only).

The byte layouts are documented on each target in targets.rs. Seeds are kept small and
meaningful: real requests, RFC 6455 frames, edge cases. Re-running overwrites them.
"""
import os
import zlib
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def u64(n):
    return struct.pack(">Q", n)


# ---- http_head: [limits byte] request; 0x00 = default limits ----
R = {
    "get_listen": b"GET /listen/?cid=news&since=4 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    "post_chunked": b"POST /publish/?cid=chat HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
    "post_length_continue": b"POST /publish/?cid=a HTTP/1.1\r\nHost: x\r\nContent-Length: 13\r\nExpect: 100-continue\r\nContent-Type: application/json\r\n\r\n{\"text\":\"hi\"}",
    "ws_upgrade": b"GET /ws/?cid=chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Version: 13\r\n\r\n",
    "http10_keepalive": b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "pipelined": b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "absolute_form": b"GET http://example.com/poll/?cid=a HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "options_star": b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    "smuggle_cl_te": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "dup_content_length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello",
    "bare_lf": b"GET / HTTP/1.1\nHost: x\n\n",
    "leading_crlf": b"\r\n\r\nGET /sse/?cid=a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 17\r\nAccept: text/event-stream\r\n\r\n",
}
for name, req in R.items():
    put("http_head", name, b"\x00" + req)
# small limits: request line 32, 4 headers, 128-byte head, max_body 16
put("http_head", "small_limits_ok", bytes([0x01 | 2 << 2 | 2 << 5 | 0x80]) + b"GET /a?b=c HTTP/1.1\r\nHost: x\r\n\r\n")
put("http_head", "small_limits_chunked", bytes([0x03 | 2 << 2 | 3 << 5 | 0x80]) + b"POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n")
put("http_head", "uri_too_long", bytes([0x01]) + b"GET /" + b"a" * 40 + b" HTTP/1.1\r\nHost: x\r\n\r\n")

# ---- chunked: [max_body selector] [split spec] body ----
put("chunked", "simple", b"\x00\x00" + b"5\r\nhello\r\n0\r\n\r\n")
put("chunked", "ext_trailers_split", b"\x00\x03\x01\x04\x07" + b"3;name=\"v a\"\r\nabc\r\nA \t;x\r\n0123456789\r\n0\r\nTrailer-One: 1\r\nT2: \x80ok\r\n\r\nGET / HTTP/1.1\r\n")
put("chunked", "upper_hex_many", b"\x00\x02\x02\x03" + b"F\r\n0123456789ABCDE\r\n1\r\n!\r\n00\r\n\r\n")
put("chunked", "too_large_for_16", b"\x03\x00" + b"11\r\n0123456789abcdefg\r\n0\r\n\r\n")
put("chunked", "bad_size", b"\x00\x00" + b"zz\r\n")
put("chunked", "bare_lf_after_data", b"\x00\x00" + b"1\r\na\n0\r\n\r\n")
put("chunked", "incomplete", b"\x00\x01\x05" + b"5\r\nhel")


# ---- ws_decoder ----
def ws(b0, payload, mask=b"\x37\xfa\x21\x3d", form=None):
    n = len(payload)
    if form is None:
        form = 0 if n <= 125 else (1 if n <= 0xFFFF else 2)
    out = bytes([b0])
    if form == 0:
        out += bytes([0x80 | n])
    elif form == 1:
        out += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        out += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return out + mask + bytes(p ^ mask[i % 4] for i, p in enumerate(payload))


# raw mode: [limits 0x00 = 1 MiB] [split spec] stream
put("ws_decoder", "rfc_hello", b"\x00\x00" + bytes.fromhex("818537fa213d7f9f4d5158"))  # RFC 6455 §5.7
put("ws_decoder", "rfc_fragmented", b"\x00\x00" + ws(0x01, b"Hel") + ws(0x80, b"lo"))
put("ws_decoder", "ping_in_fragments_split", b"\x00\x03\x01\x05\x02" + ws(0x01, "caf\u00e9 ".encode()[:4]) + ws(0x89, b"Hello") + ws(0x80, "caf\u00e9 ".encode()[4:]) + ws(0x8A, b""))
put("ws_decoder", "binary_256_16bit", b"\x00\x02\x03\x3f" + ws(0x82, bytes(range(256))))
put("ws_decoder", "binary_64bit_len", b"\x00\x00" + ws(0x82, b"abc", form=2))
put("ws_decoder", "close_1000_bye", b"\x00\x00" + ws(0x88, struct.pack(">H", 1000) + b"bye"))
put("ws_decoder", "text_invalid_utf8_failfast", b"\x00\x01\x08" + ws(0x81, b"ok\xed\xa0\x80 then more text"))
put("ws_decoder", "unmasked", b"\x00\x00" + b"\x81\x05Hello")
put("ws_decoder", "too_big_for_limit", bytes([1]) + b"\x00" + ws(0x82, b"x" * 126))
# structured mode: [0x80 | limits] [split spec] frames: b0 flags len_lo len_hi mask*4 payload
def sf(b0, payload, flags=0, mask=b"\x01\x02\x03\x04"):
    return bytes([b0, flags, len(payload) & 0xFF, len(payload) >> 8 & 1]) + mask + payload


put("ws_decoder", "model_text_ping_close", b"\x80\x02\x04\x09" + sf(0x01, "h\u00e9".encode()) + sf(0x89, b"p") + sf(0x80, b"llo") + sf(0x88, struct.pack(">H", 1001) + b"gone"))
put("ws_decoder", "model_control_16bit_len", b"\x80\x00" + sf(0x89, b"ab", flags=2))
put("ws_decoder", "model_message_limit", bytes([0x80 | 3 << 3]) + b"\x00" + sf(0x02, b"12345") + sf(0x80, b"678901"))

# ---- utf8: [split spec] bytes ----
put("utf8", "mixed_split", b"\x03\x01\x02\x03" + "h\u00e9\u20ac\U0001d11e!".encode())
put("utf8", "surrogate", b"\x00" + b"a\xed\xa0\x80")
put("utf8", "overlong", b"\x01\x01" + b"\xc0\xaf")
put("utf8", "truncated", b"\x00" + b"ok\xf0\x9f\x98")
put("utf8", "above_max", b"\x02\x01\x01" + b"\xf4\x90\x80\x80")

# ---- query: NAME \n QUERY ----
put("query", "listen", b"cid=news&since=4")
put("query", "positional_since", b"since\ncid=a%2Cb&since=1%2C2")
put("query", "callback_plus_bad_pct", b"callback\ncallback=jQuery_1.cb&x=%zz+y&&=&a")
put("query", "invalid_utf8_pct", b"cid\ncid=%FF&cid=ok")
put("query", "encoded_name", b"last_event_id\nlast%5Fevent%5Fid=9+&since")

# ---- channel: [max] [id u64] LIST \0 BODY \0 CALLBACK ----
put("channel", "json_body", b"\x08" + u64(1) + b"news,chat,news\x00 {\"text\":\"hi\",\"n\":[1,2.5,null]}\n\x00jQuery123_456.cb")
put("channel", "script_breakout", b"\x02" + u64(7) + b"room/1\x00</script><script>alert(1)</script><!--\x00cb")
put("channel", "line_separators", b"\x01" + u64(2**64 - 1) + b"a\x00\"\xe2\x80\xa8\xe2\x80\xa9 & <b>\"\x00$")
put("channel", "binary_body", b"\x01" + u64(3) + b"a:b@c#d$e_f.g-h\x00\xff\x00\x01not json\x00alert(1)")
put("channel", "bad_channels", b"\x01" + u64(4) + b"a,,b\x00{}\x00")

# ---- sse: [has id] [id u64] data ----
put("sse", "multiline", b"\x01" + u64(17) + b"hello\nworld\r\nx\ry\r")
put("sse", "envelope", b"\x01" + u64(5) + b"{\"id\":5,\"channel\":\"a\",\"data\":\"x\"}")
put("sse", "empty_no_id", b"\x00" + u64(0))
put("sse", "only_newlines", b"\x00" + u64(0) + b"\r\n\n\r\r")

# ---- since: [n | sse<<3 | header<<4] QUERY [\n LAST-EVENT-ID] ----
put("since", "positional", bytes([2]) + b"cid=a,b&since=5,7")
put("since", "sse_header_wins", bytes([2 | 8 | 16]) + b"cid=a,b&since=1\n9")
put("since", "sse_query_polyfill", bytes([1 | 8]) + b"cid=a&last_event_id=12")
put("since", "bad_value", bytes([1]) + b"since=abc")
put("since", "count_mismatch", bytes([3]) + b"since=1,2")
put("since", "spaces_plus", bytes([1 | 8 | 16]) + b"since=+5\n 7 ")

# ---- cf_command: newline-delimited Centrifugo client commands ----
put("cf_command", "connect_subscribe", b'{"id":1,"connect":{"token":"x.y.z","name":"js","subs":{"news":{"recover":true,"offset":3,"epoch":"e"}}}}\n{"id":2,"subscribe":{"channel":"chat"}}\n')
put("cf_command", "publish_history", b'{"id":3,"publish":{"channel":"chat","data":{"text":"hi"}}}\r\n\n  {"id":4,"history":{"channel":"chat","limit":10,"since":{"offset":1,"epoch":"x"},"reverse":true}}')
put("cf_command", "pong_and_garbage", b'{}\n{"id":-1}\n{"id":4294967296}\n[1,2]\nnot json\n{"presence":{"channel":5}}')

# ---- cf_token: [flags] TEXT (bit0 set: a token to verify; clear: claims to sign) ----
put("cf_token", "claims_connect", b"\x00" + b'{"sub":"alice","exp":1800000000,"info":{"name":"A"},"channels":["news"]}')
put("cf_token", "claims_subscribe", b"\x00" + b'{"sub":"bob","channel":"news","exp":1800000000,"client":"c1"}')
put("cf_token", "claims_expired", b"\x20" + b'{"sub":"x","exp":1}')
put("cf_token", "token_rfc7519_example", b"\x01" + b"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")
put("cf_token", "token_alg_none", b"\x01" + b"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.")

# ---- ws_deflate ----
put("ws_deflate", "offer_chromium", b"\x00" + b"permessage-deflate; client_max_window_bits")
put("ws_deflate", "offers_several", b"\x00" + b"x-webkit-deflate-frame\npermessage-deflate; bogus, permessage-deflate; server_max_window_bits=\"10\"")
put("ws_deflate", "offer_duplicate", b"\x00" + b"permessage-deflate; server_no_context_takeover; server_no_context_takeover")
put("ws_deflate", "rfc7692_hello", b"\x01\x00\x64\x01" + bytes.fromhex("f248cdc9c90700"))
put("ws_deflate", "rfc7692_bfinal", b"\x01\x00\x64\x06" + bytes.fromhex("f348cdc9c90700"))
put("ws_deflate", "rfc7692_stored", b"\x01\x00\x10\x01" + bytes.fromhex("000500faff48656c6c6f00"))
_z = zlib.compressobj(9, zlib.DEFLATED, -15)
put("ws_deflate", "bomb_small_limit", b"\x01\x00\x20\x09" + _z.compress(bytes(65536)) + _z.flush(zlib.Z_SYNC_FLUSH)[:-4])

