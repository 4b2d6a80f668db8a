"""The official Centrifugo Python SDKs, unchanged, against herald's Centrifugo v6 endpoints.

* `cent` (pycent): the server HTTP API client, against POST /api/<method>.
* `centrifuge-python` (import `centrifuge`): the real-time client, against the bidirectional
  JSON protocol at /connection/websocket.

Expectations are Centrifugo v6's documented behaviour. Starts its own herald (HERALD_BIN,
default ../../target/release/herald) with a config written to a temp dir, on a free port.
On a failure, pytest shows the SDK's debug log ("send commands" / "data received" lines:
the frames exchanged) and herald's log.

Run: tests/centrifugo/run.sh   (or `python3 -m pytest -q` in this folder)
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from cent import (
    BatchRequest,
    BroadcastRequest,
    ChannelsRequest,
    Client as CentClient,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    DisconnectRequest,
    PublishRequest,
    StreamPosition as CentStreamPosition,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError

import centrifuge
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    DisconnectedContext,
    JoinContext,
    PublicationContext,
    SubscribedContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

HERE = Path(__file__).resolve().parent
HERALD_BIN = os.environ.get("HERALD_BIN") or str(HERE / "../../target/release/herald")
STEP = 5.0  # bound on any single wait, seconds

SECRET = secrets.token_hex(24)
API_KEY = secrets.token_hex(16)

CONFIG = {
    "client": {
        "token": {"hmac_secret_key": SECRET},
        "allow_anonymous_connect_without_token": False,
    },
    "http_api": {"key": API_KEY},
    "channel": {
        "without_namespace": {"allow_subscribe_for_client": True},
        "namespaces": [
            {
                "name": "chat",
                "history_size": 100,
                "history_ttl": "300s",
                "force_recovery": True,
                "presence": True,
                "join_leave": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
                "allow_history_for_subscriber": True,
                "allow_presence_for_subscriber": True,
            },
            {"name": "ro", "allow_subscribe_for_client": True},
        ],
    },
}

logging.getLogger("centrifuge").setLevel(logging.DEBUG)


# ---------------------------------------------------------------------------------------
# HS256 JWT by hand.


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt(claims: dict, secret: str = SECRET) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def conn_token(user: str, ttl: int = 3600) -> str:
    return jwt({"sub": user, "exp": int(time.time()) + ttl})


# ---------------------------------------------------------------------------------------
# herald process.


class Herald:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="herald-centrifugo-py-")
        self.config = Path(self.dir) / "config.json"
        self.config.write_text(json.dumps(CONFIG, indent=2))
        self.log = ""
        self.addr = ""
        self._ready = threading.Event()
        if not Path(HERALD_BIN).exists():
            raise RuntimeError(f"herald binary not found at {HERALD_BIN} (build it, or set HERALD_BIN)")
        self.proc = subprocess.Popen(
            [HERALD_BIN, "--config", str(self.config), "--bind", "127.0.0.1", "--port", "0", "--workers", "2"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        if not self._ready.wait(10):
            self.stop()
            raise RuntimeError(f"herald did not report 'listening on 127.0.0.1:PORT':\n{self.log}")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace")
            self.log = (self.log + line)[-200_000:]
            m = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if m and not self.addr:
                self.addr = m.group(1)
                self._ready.set()

    @property
    def api_url(self) -> str:
        return f"http://{self.addr}/api"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.addr}/connection/websocket"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # by PID: only the process this fixture started
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture(scope="module")
def herald():
    h = Herald()
    yield h
    h.stop()


@pytest.fixture
def herald_log(herald):
    """herald's log lines written during the test; pytest shows them only when it fails."""
    start = len(herald.log)
    yield
    print(f"--- herald log during the test ---\n{herald.log[start:][-4000:]}")


@pytest.fixture
def cent(herald):
    return CentClient(herald.api_url, API_KEY, timeout=STEP)


# ---------------------------------------------------------------------------------------
# cent (pycent) against /api.


def test_cent_publish_broadcast_history(cent, herald_log):
    ch = "chat:py-hist"
    r1 = cent.publish(PublishRequest(channel=ch, data={"n": 1}))
    r2 = cent.publish(PublishRequest(channel=ch, data={"n": 2}))
    assert r1.offset == 1 and r2.offset == 2, (r1, r2)
    assert r1.epoch and r1.epoch == r2.epoch

    b = cent.broadcast(BroadcastRequest(channels=[ch, "chat:py-other"], data={"n": 3}))
    assert len(b.responses) == 2
    assert b.responses[0].error is None and b.responses[0].result.offset == 3
    assert b.responses[1].error is None and b.responses[1].result.offset == 1

    h = cent.history(HistoryRequest(channel=ch, limit=10))
    assert [p.data for p in h.publications] == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert [p.offset for p in h.publications] == [1, 2, 3]
    assert h.offset == 3 and h.epoch == r1.epoch

    since = cent.history(HistoryRequest(channel=ch, limit=10, since=CentStreamPosition(offset=1, epoch=r1.epoch)))
    assert [p.offset for p in since.publications] == [2, 3]
    rev = cent.history(HistoryRequest(channel=ch, limit=2, reverse=True))
    assert [p.offset for p in rev.publications] == [3, 2]

    cent.history_remove(HistoryRemoveRequest(channel=ch))
    after = cent.history(HistoryRequest(channel=ch, limit=10))
    assert after.publications == [] and after.offset == 3

    batch = cent.batch(BatchRequest(requests=[
        PublishRequest(channel=ch, data={"n": 4}),
        PublishRequest(channel="chat:py-other", data={"n": 5}),
    ]))
    assert [r.offset for r in batch.replies] == [4, 2]


def test_cent_errors(herald, cent, herald_log):
    with pytest.raises(CentApiResponseError) as e:
        cent.publish(PublishRequest(channel="nope:x", data={}))
    assert e.value.code == 102
    with pytest.raises(CentUnauthorizedError):
        CentClient(herald.api_url, "wrong-key", timeout=STEP).info(InfoRequest())
    info = cent.info(InfoRequest())
    assert len(info.nodes) >= 1 and info.nodes[0].uid and info.nodes[0].name


# ---------------------------------------------------------------------------------------
# centrifuge-python against /connection/websocket (and cent for the server side).


class ClientEvents(ClientEventHandler):
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.ctx = None
        self.disconnects = []
        self.server_subs = []
        self.server_unsubs = []
        self.server_pubs = []

    async def on_subscribed(self, ctx) -> None:
        self.server_subs.append(ctx)

    async def on_unsubscribed(self, ctx) -> None:
        self.server_unsubs.append(ctx)

    async def on_publication(self, ctx) -> None:
        self.server_pubs.append(ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.ctx = ctx
        self.connected.set()

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.disconnects.append(ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self) -> None:
        self.subscribed = asyncio.Event()
        self.sub_ctx = None
        self.pubs = []
        self.joins = []
        self.unsubscribed = []
        self.new_pub = asyncio.Event()

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.sub_ctx = ctx
        self.subscribed.set()

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.pubs.append(ctx.pub)
        self.new_pub.set()

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.append(ctx.info)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.append(ctx)


async def wait_until(cond, what: str, timeout: float = STEP) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out after {timeout}s waiting until {what}")


def test_centrifuge_python_connect_subscribe_receive(herald, cent, herald_log):
    async def scenario():
        events = ClientEvents()
        client = Client(herald.ws_url, events=events, token=conn_token("py-user"), max_reconnect_delay=0.5, proxy=None)
        sub_events = SubEvents()
        sub = client.new_subscription("chat:py-room", events=sub_events, join_leave=True)
        try:
            await client.connect()
            await asyncio.wait_for(events.connected.wait(), STEP)
            assert events.ctx.client
            await sub.subscribe()
            await asyncio.wait_for(sub_events.subscribed.wait(), STEP)
            assert sub_events.sub_ctx.recoverable is True

            # Server API publish (cent) -> SDK publication with the same offset.
            r = cent.publish(PublishRequest(channel="chat:py-room", data={"text": "from cent"}))
            await wait_until(lambda: len(sub_events.pubs) == 1, "the cent publication arrives")
            assert sub_events.pubs[0].data == {"text": "from cent"}
            assert sub_events.pubs[0].offset == r.offset

            # Client publish (allowed for subscribers of chat:) comes back.
            await sub.publish({"text": "from py client"})
            await wait_until(lambda: len(sub_events.pubs) == 2, "the client publication comes back")
            assert sub_events.pubs[1].data == {"text": "from py client"}
            assert sub_events.pubs[1].offset == r.offset + 1

            h = await sub.history(limit=10, timeout=STEP)
            assert [p.data for p in h.publications] == [{"text": "from cent"}, {"text": "from py client"}]
            assert h.offset == r.offset + 1 and h.epoch == r.epoch

            p = await sub.presence(timeout=STEP)
            assert list(p.clients) == [events.ctx.client]
            assert p.clients[events.ctx.client].user == "py-user"
            ps = await sub.presence_stats(timeout=STEP)
            assert (ps.num_clients, ps.num_users) == (1, 1)

            # The server API sees the client too.
            pres = cent.presence(PresenceRequest(channel="chat:py-room"))
            assert pres.presence[events.ctx.client].user == "py-user"
            stats = cent.presence_stats(PresenceStatsRequest(channel="chat:py-room"))
            assert (stats.num_clients, stats.num_users) == (1, 1)
            chans = cent.channels(ChannelsRequest(pattern="chat:py-*"))
            assert chans.channels["chat:py-room"].num_clients == 1

            # Client publish into ro: is refused with 103.
            ro_events = SubEvents()
            ro = client.new_subscription("ro:py", events=ro_events)
            await ro.subscribe()
            await asyncio.wait_for(ro_events.subscribed.wait(), STEP)
            with pytest.raises(centrifuge.ReplyError) as e:
                await ro.publish({"x": 1}, timeout=STEP)
            assert e.value.code == 103

            # Unknown namespace: unsubscribed with 102.
            bad_events = SubEvents()
            bad = client.new_subscription("nope:py", events=bad_events)
            await bad.subscribe()
            await wait_until(lambda: bad_events.unsubscribed, "unsubscribed from nope:py")
            assert bad_events.unsubscribed[0].code == 102
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_centrifuge_python_invalid_token(herald, herald_log):
    async def scenario():
        events = ClientEvents()
        client = Client(herald.ws_url, events=events, token=jwt({"sub": "x", "exp": int(time.time()) + 60}, "other-secret"), proxy=None)
        try:
            await client.connect()
            await wait_until(lambda: events.disconnects, "disconnected after an invalid token")
            assert events.disconnects[0].code == 3500
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 15))


def test_cent_server_side_subscribe_unsubscribe_disconnect(herald, cent, herald_log):
    async def scenario():
        events = ClientEvents()
        client = Client(herald.ws_url, events=events, token=conn_token("py-srv"), proxy=None)
        try:
            await client.connect()
            await asyncio.wait_for(events.connected.wait(), STEP)
            cent.subscribe(SubscribeRequest(user="py-srv", channel="chat:py-srv"))
            await wait_until(lambda: events.server_subs, "server-side subscribe push")
            assert events.server_subs[0].channel == "chat:py-srv"
            cent.publish(PublishRequest(channel="chat:py-srv", data={"srv": True}))
            await wait_until(lambda: events.server_pubs, "publication of the server-side subscription")
            assert events.server_pubs[0].channel == "chat:py-srv"
            assert events.server_pubs[0].pub.data == {"srv": True}
            cent.unsubscribe(UnsubscribeRequest(user="py-srv", channel="chat:py-srv"))
            await wait_until(lambda: events.server_unsubs, "server-side unsubscribe push")
            cent.disconnect(DisconnectRequest(user="py-srv"))
            await wait_until(lambda: events.disconnects, "disconnected by the server API")
            assert events.disconnects[0].code == 3503
        finally:
            await client.disconnect()

    asyncio.run(asyncio.wait_for(scenario(), 20))
