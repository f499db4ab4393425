package queue

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// This file owns who may do what on caravan's NATS. caravan server holds
// the admin token (every subject). A worker holds a Grant: a credential
// for one function, minted by caravan server for one allocation and
// handed to it over the agent endpoint, never written into a job. The
// embedded server checks it (Authenticator) and gives the connection
// only what a worker of that function needs (WorkerPermissions): pull
// and ack its own stream's consumer, read and delete its own inputs,
// write its own outputs, ask caravan server to store its results and
// whether a call is already final, hear its own cancellations. Call
// records (the KV bucket) are out of its reach: caravan server writes
// them for it (results.go).

// Grant is what a worker's credential allows: the calls of one function,
// for one allocation.
type Grant struct {
	Func
	// Alloc is the Nomad allocation the credential was minted for; it
	// names the connection's inbox prefix.
	Alloc string `json:"alloc"`
}

const grantPrefix = "cw1."

// Mint is g as a credential: "cw1.<grant, base64>.<HMAC-SHA256 under
// key>". key is the admin token: whoever holds it may mint.
func Mint(key string, g Grant) (string, error) {
	if err := g.Func.Check(); err != nil {
		return "", err
	}
	if !nameRE.MatchString(g.Alloc) {
		return "", errors.New("queue: allocation ID is not letters, digits, - and _")
	}
	b, _ := json.Marshal(g)
	body := base64.RawURLEncoding.EncodeToString(b)
	return grantPrefix + body + "." + grantSig(key, body), nil
}

func grantSig(key, body string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte("caravan nats worker\n" + body))
	return hex.EncodeToString(m.Sum(nil))
}

// ParseGrant checks a credential Mint made under key.
func ParseGrant(key, cred string) (Grant, bool) {
	rest, ok := strings.CutPrefix(cred, grantPrefix)
	if !ok {
		return Grant{}, false
	}
	body, sig, ok := strings.Cut(rest, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(grantSig(key, body))) {
		return Grant{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	var g Grant
	if err != nil || json.Unmarshal(b, &g) != nil || g.Func.Check() != nil || !nameRE.MatchString(g.Alloc) {
		return Grant{}, false
	}
	return g, true
}

// InputKey is the key caravan server signs f's inputs with, and f's
// workers check them with: within one NATS account a worker can have
// JetStream deliver its own messages on any subject (a pull request's
// reply subject is not subject to permissions), another function's input
// subject too; such an input carries no valid signature of that function.
func InputKey(admin string, f Func) string {
	m := hmac.New(sha256.New, []byte(admin))
	m.Write([]byte("caravan input key\n" + f.part()))
	return hex.EncodeToString(m.Sum(nil))
}

// inputSig signs input (or the object ref it is in) of call id.
func inputSig(key, id string, input []byte, ref string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(id + "\n" + ref + "\n"))
	m.Write(input)
	return hex.EncodeToString(m.Sum(nil))
}

// InboxPrefix is the inbox prefix of g's connection: its replies come
// there and nowhere another worker may listen.
func (g Grant) InboxPrefix() string { return "_INBOX_" + g.Alloc }

// WorkerPermissions is what a connection holding g may publish and
// subscribe to.
func WorkerPermissions(g Grant) *server.Permissions {
	f := g.Func
	s := f.Stream()
	pub := []string{
		"$JS.API.CONSUMER.INFO." + s + "." + ConsumerName,
		"$JS.API.CONSUMER.MSG.NEXT." + s + "." + ConsumerName,
		"$JS.ACK." + s + "." + ConsumerName + ".>",
		resultsSubject(f),
		statusSubject(f),
	}
	for _, b := range []string{f.InputsBucket(), f.OutputsBucket()} {
		st := "OBJ_" + b
		pub = append(pub,
			"$JS.API.STREAM.INFO."+st,
			"$JS.API.STREAM.PURGE."+st,
			"$JS.API.STREAM.MSG.GET."+st,
			"$JS.API.DIRECT.GET."+st, "$JS.API.DIRECT.GET."+st+".>",
			"$JS.API.CONSUMER.CREATE."+st, "$JS.API.CONSUMER.CREATE."+st+".>",
			"$JS.API.CONSUMER.INFO."+st+".>", "$JS.API.CONSUMER.DELETE."+st+".>",
			"$JS.API.CONSUMER.MSG.NEXT."+st+".>",
			"$O."+b+".>")
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{g.InboxPrefix() + ".>", stopSubject(f, "*")}},
	}
}

// Authenticator is the embedded server's check of a connection's token:
// the admin token gets every subject, a worker credential minted under it
// gets WorkerPermissions, anything else is refused. Credentials are
// checked, not listed: minting one needs no restart.
type Authenticator struct{ Token string }

var _ server.Authentication = Authenticator{}

func (a Authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || a.Token == "" {
		return false
	}
	if hmac.Equal([]byte(o.Token), []byte(a.Token)) {
		c.RegisterUser(&server.User{Username: "caravan"})
		return true
	}
	g, ok := ParseGrant(a.Token, o.Token)
	if !ok {
		return false
	}
	c.RegisterUser(&server.User{Username: "worker:" + g.Func.String() + ":" + g.Alloc, Permissions: WorkerPermissions(g)})
	return true
}
