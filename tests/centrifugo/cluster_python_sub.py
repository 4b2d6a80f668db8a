#!/usr/bin/env python3
"""A centrifuge-python subscriber for the cluster test (cluster.test.mjs), unchanged SDK.

Usage: cluster_python_sub.py WS_URL TOKEN CHANNEL COUNT [--protobuf]

Connects to WS_URL (one herald node), subscribes to CHANNEL and prints one JSON line per
event on stdout, flushed: {"event": "subscribed", "recoverable": .., "offset": .., "epoch": ..},
then {"event": "publication", "offset": N, "data": ..} for each publication (with
--protobuf the SDK speaks protobuf and the data bytes are decoded as the JSON text herald
sends). Exits 0 after COUNT publications, 1 on an unsubscribe or disconnect, or after 30 s.
"""
import asyncio
import json
import sys

from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler


def emit(**kv) -> None:
    print(json.dumps(kv), flush=True)


async def main(ws_url: str, token: str, channel: str, count: int, protobuf: bool) -> int:
    done = asyncio.get_running_loop().create_future()
    got = []

    class Events(ClientEventHandler):
        async def on_disconnected(self, ctx) -> None:
            emit(event="disconnected", code=ctx.code, reason=ctx.reason)
            if not done.done():
                done.set_result(1)

    class SubEvents(SubscriptionEventHandler):
        async def on_subscribed(self, ctx) -> None:
            pos = ctx.stream_position
            emit(
                event="subscribed",
                recoverable=ctx.recoverable,
                offset=pos.offset if pos else None,
                epoch=pos.epoch if pos else None,
            )

        async def on_publication(self, ctx) -> None:
            data = ctx.pub.data
            if protobuf:
                data = json.loads(bytes(data).decode())
            got.append(ctx.pub.offset)
            emit(event="publication", offset=ctx.pub.offset, data=data)
            if len(got) >= count and not done.done():
                done.set_result(0)

        async def on_unsubscribed(self, ctx) -> None:
            emit(event="unsubscribed", code=ctx.code, reason=ctx.reason)
            if not done.done():
                done.set_result(1)

    client = Client(ws_url, events=Events(), token=token, use_protobuf=protobuf, max_reconnect_delay=0.5, proxy=None)
    sub = client.new_subscription(channel, events=SubEvents())
    try:
        await client.connect()
        await sub.subscribe()
        return await asyncio.wait_for(done, 30)
    except asyncio.TimeoutError:
        emit(event="timeout", received=got)
        return 1
    finally:
        await client.disconnect()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--protobuf"]
    if len(args) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(args[0], args[1], args[2], int(args[3]), "--protobuf" in sys.argv[1:])))
