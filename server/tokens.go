package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/caravanhq/caravan/api"
	consul "github.com/hashicorp/consul/api"
)

// TokenPrefix starts every caravan token, so one found in a log or a
// repository is recognisable.
const TokenPrefix = "cvn_"

// tokensKV is the KV prefix of token records, keyed by token ID. The secret
// is never stored, only its SHA-256.
const tokensKV = "caravan/tokens/"

// A credential is an ID, a secret and a kind (api.TokenKind). An API token,
// written whole as "cvn_<id>_<secret>", is the bearer token of the API
// (CARAVAN_TOKEN) and opens no endpoint. An endpoint key, sent as the
// Caravan-Key (the ID) and Caravan-Secret headers, opens the
// requires_proxy_auth endpoints of its one workspace and not the API. Each
// check accepts only its own kind, so neither can stand in for the other.

// TokenStore is what the API asks of the token store: Tokens in
// production.
type TokenStore interface {
	// Lookup returns who a whole API token belongs to; ErrBadToken when
	// nobody (or when it is an endpoint key's), an error with code
	// unavailable when the store cannot say.
	Lookup(ctx context.Context, token string) (api.Caller, error)
	// LookupKey checks an endpoint key's ID and secret the same way; an
	// API token's are ErrBadToken.
	LookupKey(ctx context.Context, id, secret string) (api.Caller, error)
	// CreateToken makes a credential of kind; an endpoint key needs one
	// workspace, not "*".
	CreateToken(ctx context.Context, kind api.TokenKind, name, workspace string, by api.Caller) (*api.NewToken, error)
	// List returns the tokens of workspace ("*": all), the revoked ones
	// too when all is true.
	List(ctx context.Context, workspace string, all bool) ([]api.TokenInfo, error)
	// Revoke marks a token of workspace ("*": any) revoked by by; an
	// error with code not_found when there is no such live token there.
	Revoke(ctx context.Context, id, workspace string, by api.Caller) error
}

var _ TokenStore = (*Tokens)(nil)

// KV is the part of a key-value store Tokens uses: Consul KV in production
// (ConsulKV), a map in tests.
type KV interface {
	// Get returns the value at key; nil, nil when there is none.
	Get(ctx context.Context, key string) ([]byte, error)
	// List returns the values of every key under prefix.
	List(ctx context.Context, prefix string) ([][]byte, error)
	// Create writes key only if it does not exist, and reports whether it
	// did.
	Create(ctx context.Context, key string, value []byte) (bool, error)
	// Put writes key, whether or not it exists.
	Put(ctx context.Context, key string, value []byte) error
}

// ConsulKV is KV over Consul's.
type ConsulKV struct {
	KV *consul.KV
}

var _ KV = ConsulKV{}

func (c ConsulKV) Get(ctx context.Context, key string) ([]byte, error) {
	pair, _, err := c.KV.Get(key, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil || pair == nil {
		return nil, err
	}
	return pair.Value, nil
}

func (c ConsulKV) List(ctx context.Context, prefix string) ([][]byte, error) {
	pairs, _, err := c.KV.List(prefix, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, err
	}
	out := make([][]byte, 0, len(pairs))
	for _, p := range pairs {
		out = append(out, p.Value)
	}
	return out, nil
}

func (c ConsulKV) Create(ctx context.Context, key string, value []byte) (bool, error) {
	// CAS with index 0: create only, never overwrite.
	ok, _, err := c.KV.CAS(&consul.KVPair{Key: key, Value: value}, (&consul.WriteOptions{}).WithContext(ctx))
	return ok, err
}

func (c ConsulKV) Put(ctx context.Context, key string, value []byte) error {
	_, err := c.KV.Put(&consul.KVPair{Key: key, Value: value}, (&consul.WriteOptions{}).WithContext(ctx))
	return err
}

// Tokens stores API tokens in a KV store.
type Tokens struct {
	KV KV
}

type tokenRecord struct {
	api.TokenInfo
	SecretSHA256 string `json:"secret_sha256"`
}

// ErrBadToken is a missing, malformed, unknown or revoked token: 401.
var ErrBadToken error = api.Errorf(api.CodeUnauthorized, "invalid or missing token")

// errNoToken is a token to revoke that is not in the caller's workspace.
var errNoToken error = api.Errorf(api.CodeNotFound, "no such token in your workspace")

// unavailableError is a token store that did not answer (Consul is down):
// 503, since the token may well be good.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string            { return e.err.Error() }
func (e *unavailableError) Unwrap() error            { return e.err }
func (e *unavailableError) ErrorCode() api.ErrorCode { return api.CodeUnavailable }

func unavailable(format string, err error) error {
	return &unavailableError{fmt.Errorf(format, err)}
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Create makes an API token named name for workspace ("*" for every
// workspace).
func (t *Tokens) Create(name, workspace string) (string, error) {
	nt, err := t.CreateToken(context.Background(), api.TokenAPI, name, workspace, api.Caller{})
	if err != nil {
		return "", err
	}
	return nt.Token, nil
}

// CreateToken makes a credential of kind and returns it with its secret.
func (t *Tokens) CreateToken(ctx context.Context, kind api.TokenKind, name, workspace string, by api.Caller) (*api.NewToken, error) {
	switch {
	case kind != api.TokenAPI && kind != api.TokenEndpoint:
		return nil, api.Errorf(api.CodeBadRequest, "a credential's kind is %q or %q, not %q", api.TokenAPI, api.TokenEndpoint, kind)
	case kind == api.TokenEndpoint && (workspace == "*" || workspace == ""):
		// A key that opened every workspace's endpoints would cross the
		// line between tenants that endpoint keys exist to hold.
		return nil, api.Errorf(api.CodeBadRequest, "an endpoint key belongs to one workspace: name it (--workspace)")
	}
	id, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	info := api.TokenInfo{ID: id, Name: name, Workspace: workspace, Kind: kind, CreatedAt: time.Now().UTC(),
		CreatedBy: by.Name, CreatedByID: by.TokenID}
	rec, _ := json.Marshal(tokenRecord{TokenInfo: info, SecretSHA256: hashSecret(secret)})
	ok, err := t.KV.Create(ctx, tokensKV+id, rec)
	if err != nil {
		return nil, unavailable("storing token: %w", err)
	}
	if !ok {
		// Two random 64-bit IDs met: say so rather than overwrite.
		return nil, api.Errorf(api.CodeConflict, "storing token: the ID is taken; try again")
	}
	nt := &api.NewToken{TokenInfo: info, Secret: secret}
	if kind == api.TokenAPI {
		nt.Token = TokenPrefix + id + "_" + secret
	}
	return nt, nil
}

// Lookup returns who a whole API token ("cvn_<id>_<secret>") belongs to.
func (t *Tokens) Lookup(ctx context.Context, token string) (api.Caller, error) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return api.Caller{}, ErrBadToken
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok {
		return api.Caller{}, ErrBadToken
	}
	return t.lookup(ctx, api.TokenAPI, id, secret)
}

// LookupKey checks an endpoint key's ID and secret, as the proxy-auth
// headers carry them.
func (t *Tokens) LookupKey(ctx context.Context, id, secret string) (api.Caller, error) {
	return t.lookup(ctx, api.TokenEndpoint, id, secret)
}

// lookup returns who the credential id, secret of kind belongs to.
func (t *Tokens) lookup(ctx context.Context, kind api.TokenKind, id, secret string) (api.Caller, error) {
	id = strings.TrimPrefix(id, TokenPrefix)
	if id == "" || secret == "" || strings.Contains(id, "/") {
		return api.Caller{}, ErrBadToken
	}
	val, err := t.KV.Get(ctx, tokensKV+id)
	if err != nil {
		return api.Caller{}, unavailable("looking up token: %w", err)
	}
	if val == nil {
		return api.Caller{}, ErrBadToken
	}
	var rec tokenRecord
	if err := json.Unmarshal(val, &rec); err != nil {
		return api.Caller{}, fmt.Errorf("reading token record: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.SecretSHA256), []byte(hashSecret(secret))) != 1 || rec.kind() != kind ||
		!rec.RevokedAt.IsZero() {
		return api.Caller{}, ErrBadToken
	}
	return api.Caller{Name: rec.Name, TokenID: rec.ID, Workspace: rec.Workspace}, nil
}

// List returns the tokens of workspace ("*": all), oldest first; the
// revoked ones too when all is true.
func (t *Tokens) List(ctx context.Context, workspace string, all bool) ([]api.TokenInfo, error) {
	vals, err := t.KV.List(ctx, tokensKV)
	if err != nil {
		return nil, unavailable("listing tokens: %w", err)
	}
	out := []api.TokenInfo{}
	for _, v := range vals {
		var rec tokenRecord
		if json.Unmarshal(v, &rec) != nil || rec.ID == "" || (!all && !rec.RevokedAt.IsZero()) {
			continue
		}
		if workspace == "*" || rec.Workspace == workspace {
			rec.Kind = rec.kind()
			out = append(out, rec.TokenInfo)
		}
	}
	slices.SortFunc(out, func(a, b api.TokenInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Revoke marks a token of workspace ("*": any) revoked, by by, now: the
// record stays as a tombstone, without its secret's hash, so the token ID
// that history records still names someone, and the ID is never accepted
// (nor handed out) again. errNoToken when there is no such token there; a
// token revoked already is not_found too.
func (t *Tokens) Revoke(ctx context.Context, id, workspace string, by api.Caller) error {
	id = strings.TrimPrefix(id, TokenPrefix)
	if id == "" || strings.Contains(id, "/") {
		return errNoToken
	}
	val, err := t.KV.Get(ctx, tokensKV+id)
	if err != nil {
		return unavailable("looking up token: %w", err)
	}
	var rec tokenRecord
	if val == nil || json.Unmarshal(val, &rec) != nil || (workspace != "*" && rec.Workspace != workspace) {
		return errNoToken
	}
	if !rec.RevokedAt.IsZero() {
		return api.Errorf(api.CodeNotFound, "token %s was revoked already, at %s", id, rec.RevokedAt.Format(time.RFC3339))
	}
	rec.RevokedAt, rec.RevokedBy, rec.RevokedByID = time.Now().UTC(), by.Name, by.TokenID
	rec.SecretSHA256 = ""
	b, _ := json.Marshal(rec)
	if err := t.KV.Put(ctx, tokensKV+id, b); err != nil {
		return unavailable("revoking token: %w", err)
	}
	return nil
}

// kind is the record's kind: records written before there were kinds are
// API tokens.
func (r *tokenRecord) kind() api.TokenKind {
	if r.Kind == "" {
		return api.TokenAPI
	}
	return r.Kind
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// isBadToken reports whether err says the credentials are wrong, as
// opposed to the store failing to check them.
func isBadToken(err error) bool { return errors.Is(err, ErrBadToken) }
