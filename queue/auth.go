package queue

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"time"

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
//
// A grant expires (Exp): the embedded server refuses it at connect once
// expired, and closes a connection holding it when it expires
// (server.User.ConnectionDeadline). A worker fetches a fresh one before
// then, from the agent endpoint that gave it its first (Renewer), which
// answers only a live allocation: a stopped allocation's credential dies
// within one lifetime, and so does a leaked one.

// Grant is what a worker's credential allows: the calls of one function,
// for one allocation.
type Grant struct {
	Func
	// Alloc is the Nomad allocation the credential was minted for; it
	// names the connection's inbox prefix.
	Alloc string `json:"alloc"`
	// Exp is when the credential expires, in Unix seconds (JWT's exp):
	// from that second on it is refused.
	Exp int64 `json:"exp"`
}

// DefaultCredentialLifetime is how long a worker's credential is valid
// when caravan server's option does not say.
const DefaultCredentialLifetime = time.Hour

// Expiry is the Exp of a grant minted at now for lifetime: now+lifetime
// rounded up to the second, so the credential is valid at least lifetime.
func Expiry(now time.Time, lifetime time.Duration) int64 {
	return int64(math.Ceil(float64(now.Add(lifetime).UnixNano()) / 1e9))
}

// Expires is when g expires.
func (g Grant) Expires() time.Time { return time.Unix(g.Exp, 0) }

// Expired reports whether g is no longer valid at now. A grant without an
// expiry is expired: none is minted.
func (g Grant) Expired(now time.Time) bool { return g.Exp <= 0 || !now.Before(g.Expires()) }

// Credentials of the format before grants expired ("cw1.") carry no Exp;
// ParseGrant refuses them, as any other string that is not "cw2.".
const grantPrefix = "cw2."

// ErrBadCredential is a string that is no credential minted under the
// key; ErrCredentialExpired one that was, and expired.
var (
	ErrBadCredential     = errors.New("queue: not a worker credential minted under this key")
	ErrCredentialExpired = errors.New("queue: the worker credential expired")
)

// Mint is g as a credential: "cw2.<grant, base64>.<HMAC-SHA256 under
// key>". key is the admin token: whoever holds it may mint. g.Exp is
// required (Expiry).
func Mint(key string, g Grant) (string, error) {
	if err := g.Func.Check(); err != nil {
		return "", err
	}
	if !nameRE.MatchString(g.Alloc) {
		return "", errors.New("queue: allocation ID is not letters, digits, - and _")
	}
	if g.Exp <= 0 {
		return "", errors.New("queue: a worker credential needs an expiry")
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

// ParseGrant checks a credential Mint made under key, and that it has
// not expired at now: ErrBadCredential or ErrCredentialExpired if not.
func ParseGrant(key, cred string, now time.Time) (Grant, error) {
	rest, ok := strings.CutPrefix(cred, grantPrefix)
	if !ok {
		return Grant{}, ErrBadCredential
	}
	body, sig, ok := strings.Cut(rest, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(grantSig(key, body))) {
		return Grant{}, ErrBadCredential
	}
	b, err := base64.RawURLEncoding.DecodeString(body)
	var g Grant
	if err != nil || json.Unmarshal(b, &g) != nil || g.Func.Check() != nil || !nameRE.MatchString(g.Alloc) || g.Exp <= 0 {
		return Grant{}, ErrBadCredential
	}
	if g.Expired(now) {
		return Grant{}, ErrCredentialExpired
	}
	return g, nil
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
// gets WorkerPermissions until it expires (the server closes the
// connection then), anything else is refused. Credentials are checked,
// not listed: minting one needs no restart.
type Authenticator struct {
	Token string
	// Now is the clock expiry is checked against (nil: time.Now).
	Now func() time.Time
}

var _ server.Authentication = Authenticator{}

// Check authenticates one connection (at its connect, each reconnect
// too).
func (a Authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || a.Token == "" {
		return false
	}
	if hmac.Equal([]byte(o.Token), []byte(a.Token)) {
		c.RegisterUser(&server.User{Username: "caravan"})
		return true
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	g, err := ParseGrant(a.Token, o.Token, now())
	if err != nil {
		return false
	}
	// The server closes the connection when the grant expires: a worker
	// reconnects with the fresh credential it fetched meanwhile.
	c.RegisterUser(&server.User{Username: "worker:" + g.Func.String() + ":" + g.Alloc, Permissions: WorkerPermissions(g),
		ConnectionDeadline: g.Expires()})
	return true
}
