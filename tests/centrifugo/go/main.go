// centrifuge-go (the Centrifugo Go SDK, protobuf protocol, as the mobile SDKs speak it)
// against herald: connect with an HS256 token carrying a server-side subscription,
// subscribe, publish and receive the publication, history, presence and presence stats,
// an RPC refused as Centrifugo does without a proxy, and pings answered over several
// intervals. Exits non-zero with the first mismatch.
//
// Run: go run . ws://127.0.0.1:PORT/connection/websocket SECRET   (tests/centrifugo/go.sh)
package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/centrifugal/centrifuge-go"
)

func jwt(secret string, claims map[string]any) string {
	enc := base64.RawURLEncoding
	h := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	b, _ := json.Marshal(claims)
	p := enc.EncodeToString(b)
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(h + "." + p))
	return h + "." + p + "." + enc.EncodeToString(m.Sum(nil))
}

func fail(format string, a ...any) {
	fmt.Printf("FAIL "+format+"\n", a...)
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func main() {
	if len(os.Args) != 3 {
		fail("usage: go run . WS_URL SECRET")
	}
	url, secret := os.Args[1], os.Args[2]
	tok := jwt(secret, map[string]any{"sub": "gopher", "exp": time.Now().Unix() + 3600, "channels": []string{"srv"}})
	c := centrifuge.NewProtobufClient(url, centrifuge.Config{Token: tok})
	connected := make(chan centrifuge.ConnectedEvent, 1)
	serverSubscribed := make(chan string, 1)
	c.OnConnected(func(e centrifuge.ConnectedEvent) { connected <- e })
	c.OnSubscribed(func(e centrifuge.ServerSubscribedEvent) { serverSubscribed <- e.Channel })
	c.OnError(func(e centrifuge.ErrorEvent) { fmt.Println("client error:", e.Error) })
	check(c.Connect(), "connect")
	select {
	case e := <-connected:
		if e.ClientID == "" {
			fail("connected without a client id")
		}
	case <-time.After(5 * time.Second):
		fail("connect timed out")
	}
	select {
	case ch := <-serverSubscribed:
		if ch != "srv" {
			fail("server-side subscription to %q, want srv", ch)
		}
	case <-time.After(5 * time.Second):
		fail("no server-side subscription from the token's channels")
	}
	sub, err := c.NewSubscription("chat:go")
	check(err, "new subscription")
	pubs := make(chan centrifuge.PublicationEvent, 8)
	subscribed := make(chan centrifuge.SubscribedEvent, 1)
	sub.OnSubscribed(func(e centrifuge.SubscribedEvent) { subscribed <- e })
	sub.OnPublication(func(e centrifuge.PublicationEvent) { pubs <- e })
	check(sub.Subscribe(), "subscribe")
	select {
	case e := <-subscribed:
		if !e.Recoverable || !e.Positioned {
			fail("subscribe result recoverable=%v positioned=%v, want both (force_recovery)", e.Recoverable, e.Positioned)
		}
	case <-time.After(5 * time.Second):
		fail("subscribe timed out")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = sub.Publish(ctx, []byte(`{"hello":"go"}`))
	check(err, "publish")
	select {
	case p := <-pubs:
		if string(p.Data) != `{"hello":"go"}` || p.Offset != 1 || p.Info == nil || p.Info.User != "gopher" {
			fail("publication %s offset %d info %+v", p.Data, p.Offset, p.Info)
		}
	case <-time.After(5 * time.Second):
		fail("no publication")
	}
	h, err := sub.History(ctx, centrifuge.WithHistoryLimit(-1))
	check(err, "history")
	if len(h.Publications) != 1 || h.Offset != 1 || h.Epoch == "" || string(h.Publications[0].Data) != `{"hello":"go"}` {
		fail("history %d publications, offset %d, epoch %q", len(h.Publications), h.Offset, h.Epoch)
	}
	pr, err := sub.Presence(ctx)
	check(err, "presence")
	if len(pr.Clients) != 1 {
		fail("presence has %d clients, want 1", len(pr.Clients))
	}
	for _, v := range pr.Clients {
		if v.User != "gopher" {
			fail("presence user %q", v.User)
		}
	}
	ps, err := sub.PresenceStats(ctx)
	check(err, "presence stats")
	if ps.NumClients != 1 || ps.NumUsers != 1 {
		fail("presence stats %d clients %d users", ps.NumClients, ps.NumUsers)
	}
	if _, err = c.RPC(ctx, "m", nil); err == nil {
		fail("rpc answered without a proxy")
	}
	// ping_interval is 1s in the test config: three rounds of server pings and pongs.
	time.Sleep(3500 * time.Millisecond)
	if c.State() != centrifuge.StateConnected {
		fail("state %v after pings, want connected", c.State())
	}
	c.Close()
	fmt.Println("centrifuge-go protobuf: connect, server-side subscription, subscribe, publish, history, presence, presence stats, rpc refusal, pings: OK")
}
