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

	"github.com/caravanhq/caravan/orchestrator"
	consul "github.com/hashicorp/consul/api"
)

// TokenPrefix starts every caravan token, so one found in a log or a
// repository is recognisable.
const TokenPrefix = "cvn_"

// tokensKV is the Consul KV prefix of token records, keyed by token ID. The
// secret is never stored, only its SHA-256.
const tokensKV = "caravan/tokens/"

// A token is an ID and a secret. Written whole, "cvn_<id>_<secret>", it is
// the bearer token of the API (CARAVAN_TOKEN); as a pair it is what web
// endpoints with requires_proxy_auth take, in the Caravan-Key (the ID) and
// Caravan-Secret headers.

// Tokens stores API tokens in Consul KV.
type Tokens struct {
	KV *consul.KV
}

// TokenInfo describes a token; it never holds the secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Workspace string    `json:"workspace"`
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by,omitempty"`
}

// NewToken is a token as created: its secret is shown this once.
type NewToken struct {
	TokenInfo
	Secret string `json:"secret"`
	// Token is "cvn_<id>_<secret>", for CARAVAN_TOKEN.
	Token string `json:"token"`
}

type tokenRecord struct {
	TokenInfo
	SecretSHA256 string `json:"secret_sha256"`
}

// ErrBadToken is a missing, malformed, unknown or revoked token.
var ErrBadToken = errors.New("invalid or missing token")

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// Create makes a token named name for workspace ("*" for every workspace).
func (t *Tokens) Create(name, workspace string) (string, error) {
	nt, err := t.CreateToken(context.Background(), name, workspace, "")
	if err != nil {
		return "", err
	}
	return nt.Token, nil
}

// CreateToken makes a token and returns it with its secret.
func (t *Tokens) CreateToken(ctx context.Context, name, workspace, by string) (*NewToken, error) {
	id, err := randomHex(8)
	if err != nil {
		return nil, err
	}
	secret, err := randomHex(24)
	if err != nil {
		return nil, err
	}
	info := TokenInfo{ID: id, Name: name, Workspace: workspace, CreatedAt: time.Now().UTC(), CreatedBy: by}
	rec, _ := json.Marshal(tokenRecord{TokenInfo: info, SecretSHA256: hashSecret(secret)})
	// CAS with index 0: create only, never overwrite.
	ok, _, err := t.KV.CAS(&consul.KVPair{Key: tokensKV + id, Value: rec}, (&consul.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("storing token: %w", err)
	}
	if !ok {
		return nil, errors.New("storing token: the ID is taken; try again")
	}
	return &NewToken{TokenInfo: info, Secret: secret, Token: TokenPrefix + id + "_" + secret}, nil
}

// Lookup returns who a whole token ("cvn_<id>_<secret>") belongs to.
func (t *Tokens) Lookup(token string) (orchestrator.Caller, error) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	if !ok {
		return orchestrator.Caller{}, ErrBadToken
	}
	id, secret, ok := strings.Cut(rest, "_")
	if !ok {
		return orchestrator.Caller{}, ErrBadToken
	}
	return t.LookupPair(context.Background(), id, secret)
}

// LookupPair checks an ID and secret, as the proxy-auth headers carry them.
func (t *Tokens) LookupPair(ctx context.Context, id, secret string) (orchestrator.Caller, error) {
	id = strings.TrimPrefix(id, TokenPrefix)
	if id == "" || secret == "" || strings.Contains(id, "/") {
		return orchestrator.Caller{}, ErrBadToken
	}
	pair, _, err := t.KV.Get(tokensKV+id, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return orchestrator.Caller{}, fmt.Errorf("looking up token: %w", err)
	}
	if pair == nil {
		return orchestrator.Caller{}, ErrBadToken
	}
	var rec tokenRecord
	if err := json.Unmarshal(pair.Value, &rec); err != nil {
		return orchestrator.Caller{}, fmt.Errorf("reading token record: %w", err)
	}
	if subtle.ConstantTimeCompare([]byte(rec.SecretSHA256), []byte(hashSecret(secret))) != 1 {
		return orchestrator.Caller{}, ErrBadToken
	}
	return orchestrator.Caller{Name: rec.Name, Workspace: rec.Workspace}, nil
}

// List returns the tokens of workspace ("*": all), oldest first.
func (t *Tokens) List(ctx context.Context, workspace string) ([]TokenInfo, error) {
	pairs, _, err := t.KV.List(tokensKV, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	out := []TokenInfo{}
	for _, p := range pairs {
		var rec tokenRecord
		if json.Unmarshal(p.Value, &rec) != nil || rec.ID == "" {
			continue
		}
		if workspace == "*" || rec.Workspace == workspace {
			out = append(out, rec.TokenInfo)
		}
	}
	slices.SortFunc(out, func(a, b TokenInfo) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// Revoke deletes a token of workspace ("*": any); errNoToken when there is
// no such token there.
func (t *Tokens) Revoke(ctx context.Context, id, workspace string) error {
	id = strings.TrimPrefix(id, TokenPrefix)
	pair, _, err := t.KV.Get(tokensKV+id, (&consul.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return err
	}
	var rec tokenRecord
	if pair == nil || json.Unmarshal(pair.Value, &rec) != nil || (workspace != "*" && rec.Workspace != workspace) {
		return errNoToken
	}
	_, err = t.KV.Delete(tokensKV+id, (&consul.WriteOptions{}).WithContext(ctx))
	return err
}

func hashSecret(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
