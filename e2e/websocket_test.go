package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caravanhq/caravan/api"
	"github.com/gorilla/websocket"
)

// TestWebSocketEcho echoes a 1 MiB WebSocket message through Traefik.
func TestWebSocketEcho(t *testing.T) {
	purge(t, "e2e--ws")
	src := fmt.Sprintf("app \"ws\" {\n  workspace = \"e2e\"\n  function \"echo\" {\n    command = %q\n    web {}\n  }\n}\n", buildWSEcho(t))
	url := deploy(t, "ws.hcl", src, api.DeployBody{}).Functions[0].URL
	wsEcho(t, url)
}

// buildWSEcho builds the wsecho test backend and returns its path.
func buildWSEcho(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "wsecho")
	if out, err := exec.Command("go", "build", "-o", bin, "./wsecho").CombinedOutput(); err != nil {
		t.Fatalf("building wsecho: %v\n%s", err, out)
	}
	return bin
}

// wsEcho dials url's /echo over WebSocket through Traefik and echoes a
// 1 MiB message three times.
func wsEcho(t *testing.T, url string) {
	t.Helper()
	d := websocket.Dialer{
		NetDialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, env.stack.HTTPSAddr())
		},
		TLSClientConfig:  &tls.Config{RootCAs: env.roots},
		HandshakeTimeout: 10 * time.Second,
	}
	c, resp, err := d.Dial(strings.Replace(url, "https://", "wss://", 1)+"/echo", nil)
	if err != nil {
		t.Fatalf("dial: %v (%v)", err, resp)
	}
	defer c.Close()
	c.SetReadLimit(4 << 20)
	msg := make([]byte, 1<<20)
	rand.Read(msg)
	for i := range 3 {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		kind, got, err := c.ReadMessage()
		if err != nil || kind != websocket.BinaryMessage || !bytes.Equal(got, msg) {
			t.Fatalf("echo %d: kind %d, %d bytes, %v; want the 1 MiB message back", i, kind, len(got), err)
		}
	}
}
