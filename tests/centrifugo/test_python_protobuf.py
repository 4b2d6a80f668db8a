"""centrifuge-python with `use_protobuf=True`, unchanged, against herald's /connection/websocket.

The SDK offers the `centrifuge-protobuf` subprotocol and speaks varint-delimited protobuf in
binary frames; publication data is bytes (herald sends the JSON text it stores, as
Centrifugo passes JSON through). Reuses the herald fixture and helpers of
test_python_sdk.py. Expectations are Centrifugo v6's behaviour.

Run: tests/centrifugo/run.sh   (or `python3 -m pytest -q test_python_protobuf.py` here)
"""

import asyncio
import json
import time

import pytest
from cent import PublishRequest, UnsubscribeRequest

import centrifuge
from centrifuge import Client

from test_python_sdk import (  # noqa: F401  (herald, herald_log, cent are fixtures)
    STEP,
    ClientEvents,
    SubEvents,
    cent,
    conn_token,
    herald,
    herald_log,
    jwt,
    wait_until,
)


def test_centrifuge_python_protobuf(herald, cent, herald_log):
    async def scenario():
        events = ClientEvents()
        client = Client(
            herald.ws_url, events=events, token=conn_token("py-pb"), use_protobuf=True, max_reconnect_delay=0.5, proxy=None
        )
        sub_events = SubEvents()
        sub = client.new_subscription("chat:py-pb", events=sub_events, join_leave=True)
        try:
            await client.connect()
            await asyncio.wait_for(events.connected.wait(), STEP)
            assert events.ctx.client
            await sub.subscribe()
            await asyncio.wait_for(sub_events.subscribed.wait(), STEP)
            assert sub_events.sub_ctx.recoverable is True

            r = cent.publish(PublishRequest(channel="chat:py-pb", data={"text": "from cent"}))
            await wait_until(lambda: len(sub_events.pubs) == 1, "the cent publication arrives")
            assert json.loads(sub_events.pubs[0].data) == {"text": "from cent"}
            assert sub_events.pubs[0].offset == r.offset

            await sub.publish(json.dumps({"text": "from py"}).encode())
            await wait_until(lambda: len(sub_events.pubs) == 2, "the client publication comes back")
            assert json.loads(sub_events.pubs[1].data) == {"text": "from py"}
            assert sub_events.pubs[1].offset == r.offset + 1

            h = await sub.history(limit=10, timeout=STEP)
            assert [json.loads(p.data) for p in h.publications] == [{"text": "from cent"}, {"text": "from py"}]
            assert h.offset == r.offset + 1 and h.epoch == r.epoch

            p = await sub.presence(timeout=STEP)
            assert list(p.clients) == [events.ctx.client]
            assert p.clients[events.ctx.client].user == "py-pb"
            ps = await sub.presence_stats(timeout=STEP)
            assert (ps.num_clients, ps.num_users) == (1, 1)

            # Publish into ro: is refused with 103; an unknown namespace unsubscribes with 102.
            ro_events = SubEvents()
            ro = client.new_subscription("ro:py-pb", events=ro_events)
            await ro.subscribe()
            await asyncio.wait_for(ro_events.subscribed.wait(), STEP)
            with pytest.raises(centrifuge.ReplyError) as e:
                await ro.publish(b"{}", timeout=STEP)
            assert e.value.code == 103
            bad_events = SubEvents()
            bad = client.new_subscription("nope:py-pb", events=bad_events)
            await bad.subscribe()
            await wait_until(lambda: bad_events.unsubscribed, "unsubscribed from nope:py-pb")
            assert bad_events.unsubscribed[0].code == 102
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_centrifuge_python_protobuf_server_side_subscription(herald, cent, herald_log):
    async def scenario():
        events = ClientEvents()
        token = jwt({"sub": "py-pb-srv", "exp": int(time.time()) + 3600, "channels": ["news-py-pb"]})
        client = Client(herald.ws_url, events=events, token=token, use_protobuf=True, max_reconnect_delay=0.5, proxy=None)
        try:
            await client.connect()
            await asyncio.wait_for(events.connected.wait(), STEP)
            await wait_until(lambda: events.server_subs, "the server-side subscription")
            assert events.server_subs[0].channel == "news-py-pb"
            cent.publish(PublishRequest(channel="news-py-pb", data={"s": 1}))
            await wait_until(lambda: events.server_pubs, "a publication on the server-side subscription")
            assert json.loads(events.server_pubs[0].pub.data) == {"s": 1}
            cent.unsubscribe(UnsubscribeRequest(user="py-pb-srv", channel="news-py-pb"))
            await wait_until(lambda: events.server_unsubs, "the server unsubscribe push")
            assert events.server_unsubs[0].channel == "news-py-pb"
            assert not events.disconnects
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 30))
