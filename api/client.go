package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Client talks to caravan server; the CLI and the e2e tests use it.
type Client struct {
	// Addr is the server's base URL, e.g. "http://127.0.0.1:7474".
	Addr  string
	Token string
	HTTP  *http.Client
}

// Deploy sends a spec to deploy and waits for the result. A failure is an
// *APIError carrying the diagnostics or the rollout failure.
func (c *Client) Deploy(ctx context.Context, filename string, spec []byte, timeout time.Duration) (*DeployResult, error) {
	return c.DeployBody(ctx, DeployBody{Filename: filename, Spec: string(spec), Timeout: durationString(timeout)})
}

// DeployBody deploys with every option of the API.
func (c *Client) DeployBody(ctx context.Context, body DeployBody) (*DeployResult, error) {
	var res DeployResult
	return &res, c.do(ctx, http.MethodPost, "/v1/deploy", body, &res)
}

func refQuery(ref ChangeBody) url.Values {
	q := url.Values{}
	if ref.Workspace != "" {
		q.Set("workspace", ref.Workspace)
	}
	if ref.Environment != "" {
		q.Set("environment", ref.Environment)
	}
	if ref.Serve {
		q.Set("serve", "true")
	}
	return q
}

// Plan says what deploying body would change, changing nothing.
func (c *Client) Plan(ctx context.Context, body DeployBody) (*PlanResult, error) {
	var res PlanResult
	return &res, c.do(ctx, http.MethodPost, "/v1/plan", body, &res)
}

// History returns an app's versions.
func (c *Client) History(ctx context.Context, app string, ref ChangeBody) (*History, error) {
	var h History
	return &h, c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/history?"+refQuery(ref).Encode(), nil, &h)
}

// Logs copies the app's container logs to w until ctx ends.
func (c *Client) Logs(ctx context.Context, app string, ref ChangeBody, w io.Writer) error {
	resp, err := c.send(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/logs?"+refQuery(ref).Encode(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// URL returns the URL of an app's web function.
func (c *Client) URL(ctx context.Context, app, function string, ref ChangeBody) (string, error) {
	q := refQuery(ref)
	q.Set("function", function)
	var out struct {
		URL string `json:"url"`
	}
	err := c.do(ctx, http.MethodGet, "/v1/apps/"+url.PathEscape(app)+"/url?"+q.Encode(), nil, &out)
	return out.URL, err
}

// CreateToken makes an API token; its secret is in the answer and nowhere
// else.
func (c *Client) CreateToken(ctx context.Context, name, workspace string) (*NewToken, error) {
	return c.createCredential(ctx, TokenBody{Name: name, Workspace: workspace, Kind: TokenAPI})
}

// Domains lists the custom domain bindings the caller may see.
func (c *Client) Domains(ctx context.Context) ([]DomainBinding, error) {
	var list []DomainBinding
	return list, c.do(ctx, http.MethodGet, "/v1/domains", nil, &list)
}

// VerifyDomain checks the TXT record that proves workspace (empty: the
// token's) controls domain, and binds it; an error of kind
// domain_unverified names the record to create and its value.
func (c *Client) VerifyDomain(ctx context.Context, domain, workspace string) (*DomainBinding, error) {
	var b DomainBinding
	return &b, c.do(ctx, http.MethodPost, "/v1/domains/verify", DomainBody{Domain: domain, Workspace: workspace}, &b)
}

// AssignDomain binds domain to workspace without a DNS check; it needs an
// operator's token (workspace "*").
func (c *Client) AssignDomain(ctx context.Context, domain, workspace string) (*DomainBinding, error) {
	var b DomainBinding
	return &b, c.do(ctx, http.MethodPost, "/v1/domains", DomainBody{Domain: domain, Workspace: workspace}, &b)
}

// CreateEndpointKey makes an endpoint key, for the requires_proxy_auth
// endpoints of workspace (default: the caller's); its secret is in the
// answer and nowhere else.
func (c *Client) CreateEndpointKey(ctx context.Context, name, workspace string) (*NewToken, error) {
	return c.createCredential(ctx, TokenBody{Name: name, Workspace: workspace, Kind: TokenEndpoint})
}

func (c *Client) createCredential(ctx context.Context, body TokenBody) (*NewToken, error) {
	var nt NewToken
	return &nt, c.do(ctx, http.MethodPost, "/v1/tokens", body, &nt)
}

// Tokens lists the live tokens and endpoint keys of the caller's
// workspace.
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var list []TokenInfo
	return list, c.do(ctx, http.MethodGet, "/v1/tokens", nil, &list)
}

// AllTokens lists them with the revoked ones (RevokedAt set).
func (c *Client) AllTokens(ctx context.Context) ([]TokenInfo, error) {
	var list []TokenInfo
	return list, c.do(ctx, http.MethodGet, "/v1/tokens?all=true", nil, &list)
}

// RevokeToken revokes a token or endpoint key: it stops working at once,
// and its record stays, marked revoked.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// Rollover replaces every container of an app with a fresh one.
func (c *Client) Rollover(ctx context.Context, app string, body ChangeBody) (*DeployResult, error) {
	return c.change(ctx, app, "rollover", body)
}

// Rollback deploys an earlier version's spec as a new version.
func (c *Client) Rollback(ctx context.Context, app string, body ChangeBody) (*DeployResult, error) {
	return c.change(ctx, app, "rollback", body)
}

// Promote moves all traffic of an app's canary to it; it becomes live.
func (c *Client) Promote(ctx context.Context, app string, body ChangeBody) (*DeployResult, error) {
	return c.change(ctx, app, "promote", body)
}

// Abort sends all traffic of an app's canary back to the live version and
// removes the canaries.
func (c *Client) Abort(ctx context.Context, app string, body ChangeBody) (*DeployResult, error) {
	return c.change(ctx, app, "abort", body)
}

// change posts body to the app's change endpoint verb
// (POST /v1/apps/{app}/{verb}), which answers a DeployResult.
func (c *Client) change(ctx context.Context, app, verb string, body ChangeBody) (*DeployResult, error) {
	var res DeployResult
	return &res, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/"+verb, body, &res)
}

// Run launches a scheduled function now and waits for its result.
func (c *Client) Run(ctx context.Context, app string, body RunBody) (*RunResult, error) {
	var res RunResult
	return &res, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/run", body, &res)
}

// Call runs a callable function once with input (JSON, sent as it is) and
// waits for its result. An input over 16 KiB is an *APIError with Status
// 413, and nothing runs.
func (c *Client) Call(ctx context.Context, app, function string, ref ChangeBody, input []byte, timeout time.Duration) (*CallResult, error) {
	q := refQuery(ref)
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	if input == nil {
		input = []byte{}
	}
	var res CallResult
	return &res, c.doBody(ctx, http.MethodPost,
		"/v1/apps/"+url.PathEscape(app)+"/functions/"+url.PathEscape(function)+"/call?"+q.Encode(), input, &res)
}

// Spawn queues one call of a warm callable function and returns its ID
// at once; CallGet reads it later.
func (c *Client) Spawn(ctx context.Context, app, function string, ref ChangeBody, input []byte) (*CallStatus, error) {
	q := refQuery(ref)
	q.Set("spawn", "true")
	if input == nil {
		input = []byte{}
	}
	var st CallStatus
	return &st, c.doBody(ctx, http.MethodPost,
		"/v1/apps/"+url.PathEscape(app)+"/functions/"+url.PathEscape(function)+"/call?"+q.Encode(), input, &st)
}

// CallGet reads a spawned call; with wait > 0 it waits up to that long
// for the call to end first. A call past its 7 days is a not_found
// *APIError saying it expired.
func (c *Client) CallGet(ctx context.Context, id string, wait time.Duration) (*CallStatus, error) {
	path := "/v1/calls/" + url.PathEscape(id)
	if wait > 0 {
		path += "?wait=" + url.QueryEscape(wait.String())
	}
	var st CallStatus
	return &st, c.do(ctx, http.MethodGet, path, nil, &st)
}

// CallCancel cancels a spawned call: queued, it never runs; running, its
// process is stopped. A finished call stays as it was.
func (c *Client) CallCancel(ctx context.Context, id string) (*CallStatus, error) {
	var st CallStatus
	return &st, c.do(ctx, http.MethodPost, "/v1/calls/"+url.PathEscape(id)+"/cancel", nil, &st)
}

// Map calls a warm function once per line of inputs (JSON lines) and
// hands each result to each, in input order, as they come.
func (c *Client) Map(ctx context.Context, app, function string, ref ChangeBody, inputs io.Reader, timeout time.Duration, each func(MapItem) error) error {
	q := refQuery(ref)
	if timeout > 0 {
		q.Set("timeout", timeout.String())
	}
	resp, err := c.sendReader(ctx, http.MethodPost,
		"/v1/apps/"+url.PathEscape(app)+"/functions/"+url.PathEscape(function)+"/map?"+q.Encode(), inputs, "application/x-ndjson")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			MapItem
			MapError *APIError `json:"map_error"`
		}
		if err := dec.Decode(&line); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("reading the map's results: %w", err)
		}
		// A map that fails after its first results ends with the reason.
		if line.MapError != nil {
			return line.MapError
		}
		if err := each(line.MapItem); err != nil {
			return err
		}
	}
}

// Stop purges an app.
func (c *Client) Stop(ctx context.Context, app string, body ChangeBody) (*AppRecord, error) {
	var rec AppRecord
	return &rec, c.do(ctx, http.MethodPost, "/v1/apps/"+url.PathEscape(app)+"/stop", body, &rec)
}

func durationString(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}

// Apps lists the apps the token may see.
func (c *Client) Apps(ctx context.Context) ([]AppSummary, error) {
	var apps []AppSummary
	return apps, c.do(ctx, http.MethodGet, "/v1/apps", nil, &apps)
}

// MissingBundles returns those of ids workspace (empty: the token's) has
// not uploaded to the server.
func (c *Client) MissingBundles(ctx context.Context, workspace string, ids []string) ([]string, error) {
	var out BundlesBody
	err := c.do(ctx, http.MethodPost, "/v1/bundles/missing", BundlesBody{IDs: ids, Workspace: workspace}, &out)
	return out.IDs, err
}

// UploadBundle streams bundle id, gzip-compressed, from r to the server,
// which verifies it against id before it stores it, for workspace (empty:
// the token's).
func (c *Client) UploadBundle(ctx context.Context, workspace, id string, r io.Reader) (*BundleInfo, error) {
	path := "/v1/bundles/" + url.PathEscape(id)
	if workspace != "" {
		path += "?workspace=" + url.QueryEscape(workspace)
	}
	resp, err := c.sendReader(ctx, http.MethodPut, path, r, "application/gzip")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var info BundleInfo
	return &info, json.NewDecoder(resp.Body).Decode(&info)
}

// Health reports whether the server answers.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/v1/health", nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = b
	}
	return c.doBody(ctx, method, path, body, out)
}

// doBody sends body (JSON, none when nil) as it is and decodes the answer
// into out.
func (c *Client) doBody(ctx context.Context, method, path string, in []byte, out any) error {
	resp, err := c.send(ctx, method, path, in)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// send makes a request with the client's address, token and HTTP client,
// and returns a 2xx answer for the caller to read and close; any other
// answer is read here and returned as an *APIError.
func (c *Client) send(ctx context.Context, method, path string, in []byte) (*http.Response, error) {
	if in == nil {
		return c.sendReader(ctx, method, path, nil, "")
	}
	return c.sendReader(ctx, method, path, bytes.NewReader(in), "application/json")
}

// sendReader is send with a body read from body (streamed when it is not
// a *bytes.Reader) of the given content type.
func (c *Client) sendReader(ctx context.Context, method, path string, body io.Reader, contentType string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.Addr, "/")+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach caravan server at %s (is it running? `caravan dev up` starts one): %w", c.Addr, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	// An error body is small; a huge one is not caravan's.
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	return nil, responseError(method, path, resp, b)
}

// responseError types a failed answer: the server's {"error": APIError}
// with its code, or, for a body without one (a proxy's page, say), the code
// the status means, with the body as the message.
func responseError(method, path string, resp *http.Response, body []byte) *APIError {
	var env struct {
		Error *APIError `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		return &APIError{Kind: CodeOf(resp.StatusCode), Status: resp.StatusCode,
			Message: fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(body))}
	}
	env.Error.Status = resp.StatusCode
	if !env.Error.Kind.Known() {
		// A newer server's code: keep its message, type it by status.
		env.Error.Kind = CodeOf(resp.StatusCode)
	}
	return env.Error
}
