package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// FetchNATS asks caravan server at u (the task's EnvNATSURL, signed) for
// the worker's NATS URL and credential, again every half second until ctx
// ends: a server restarting, or Nomad not yet reporting the allocation
// running, passes.
func FetchNATS(ctx context.Context, u string, client *http.Client) (NATSAnswer, error) {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	var last error
	for {
		ans, err := fetchNATS(ctx, u, client)
		if err == nil {
			return ans, nil
		}
		last = err
		select {
		case <-ctx.Done():
			return NATSAnswer{}, fmt.Errorf("the NATS credential from caravan server: %w", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func fetchNATS(ctx context.Context, u string, client *http.Client) (NATSAnswer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return NATSAnswer{}, err
	}
	resp, err := client.Do(req)
	if err != nil {
		// The error names the URL: not its signature.
		var ue *url.Error
		if errors.As(err, &ue) {
			ue.URL = redactSig(ue.URL)
		}
		return NATSAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return NATSAnswer{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return NATSAnswer{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	var ans NATSAnswer
	if err := json.Unmarshal(body, &ans); err != nil || ans.URL == "" || ans.Token == "" {
		// Not the body: it may hold a credential.
		return NATSAnswer{}, fmt.Errorf("an answer without a NATS URL and credential (%d bytes)", len(body))
	}
	return ans, nil
}

// redactSig is agent URL u without its signature's value.
func redactSig(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(an agent URL)"
	}
	q := p.Query()
	if q.Has("sig") {
		q.Set("sig", "REDACTED")
		p.RawQuery = q.Encode()
	}
	return p.String()
}
