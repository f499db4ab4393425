package server

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/caravanhq/caravan/orchestrator"
	consul "github.com/hashicorp/consul/api"
)

// TokenPrefix starts every caravan token, so one found in a log or a
// repository is recognisable.
const TokenPrefix = "cvn_"

// tokensKV is the Consul KV prefix of token records, keyed by the SHA-256
// of the token: the token itself is never stored.
const tokensKV = "caravan/tokens/"

// Tokens stores API tokens hashed in Consul KV.
type Tokens struct {
	KV *consul.KV
}

// tokenRecord is what is stored for a token.
type tokenRecord struct {
	Name      string `json:"name"`
	Workspace string `json:"workspace"`
}

// ErrBadToken is a missing, malformed or unknown token.
var ErrBadToken = errors.New("invalid or missing token")

// Create makes a new token for name acting on workspace ("*" for all) and
// returns its secret, which is shown once and not stored.
func (t *Tokens) Create(name, workspace string) (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	secret := TokenPrefix + hex.EncodeToString(b)
	rec, _ := json.Marshal(tokenRecord{Name: name, Workspace: workspace})
	// CAS with index 0: create only, never overwrite.
	ok, _, err := t.KV.CAS(&consul.KVPair{Key: tokensKV + hashToken(secret), Value: rec, ModifyIndex: 0}, nil)
	if err != nil {
		return "", fmt.Errorf("storing token: %w", err)
	}
	if !ok {
		return "", errors.New("storing token: a token with this hash exists")
	}
	return secret, nil
}

// Lookup returns who a token belongs to.
func (t *Tokens) Lookup(secret string) (orchestrator.Caller, error) {
	if !strings.HasPrefix(secret, TokenPrefix) {
		return orchestrator.Caller{}, ErrBadToken
	}
	pair, _, err := t.KV.Get(tokensKV+hashToken(secret), nil)
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
	return orchestrator.Caller{Name: rec.Name, Workspace: rec.Workspace}, nil
}

func hashToken(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}
