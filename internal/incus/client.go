package incus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// DefaultSocketPath is where a packaged incusd listens.
const DefaultSocketPath = "/var/lib/incus/unix.socket"

// baseURL is a placeholder host; every connection is dialed to the unix socket regardless.
const baseURL = "http://incus"

// maxEnvelope bounds JSON answers so a misbehaving server cannot exhaust memory.
const maxEnvelope = 64 << 20

// Client talks to one Incus daemon over its unix socket; it is safe for concurrent use.
type Client struct {
	// socketPath is the unix socket every request is dialed to.
	socketPath string
	// project is added as ?project= to every request when not empty.
	project string
	// http is shared by copies made with WithProject (one transport, no keep-alive: see New).
	http *http.Client
}

// New returns a client for the socket (DefaultSocketPath when path is ""); nothing is dialed until the first call.
func New(socketPath string) *Client {
	if socketPath == "" {
		socketPath = DefaultSocketPath
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, "unix", socketPath)
		},
		// No keep-alive: a connection lives only while its request does.
		// incusd (6.0) reads the first bytes of every new unix-socket
		// connection inside its accept loop, with no deadline, to look for
		// STARTTLS. A connection that is open but has sent nothing therefore
		// stops incusd from accepting any other connection: its own liblxc
		// hooks time out (30 s each, a failed start after 90 s) and every new
		// client waits. Keep-alive connections did exactly that: a dial that
		// finished after its request was cancelled or served by another
		// connection went to the idle pool unused, silent, for IdleConnTimeout
		// (90 s). Without keep-alive such a connection is closed at once, and
		// a new one always carries its request right after the dial.
		DisableKeepAlives: true,
	}
	// No client timeout: operation waits are long polls bounded by the caller's ctx instead.
	return &Client{socketPath: socketPath, http: &http.Client{Transport: transport}}
}

// WithProject returns a copy addressing project p (adds ?project=p to every request); "" means the server default, and all projects for events.
func (c *Client) WithProject(p string) *Client {
	cc := *c
	cc.project = p
	return &cc
}

// Project returns the project this client addresses ("" for the server default).
func (c *Client) Project() string {
	return c.project
}

// SocketPath returns the unix socket this client dials.
func (c *Client) SocketPath() string {
	return c.socketPath
}

// url joins an escaped API path (which may carry its own query) with extra query values and the project.
func (c *Client) url(p string, query url.Values) (string, error) {
	u, err := url.Parse(baseURL + p)
	if err != nil {
		return "", fmt.Errorf("incus: bad path %q: %w", p, err)
	}
	q := u.Query()
	for k, vs := range query {
		for _, v := range vs {
			q.Add(k, v)
		}
	}
	if c.project != "" && q.Get("project") == "" {
		q.Set("project", c.project)
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// send performs one HTTP request and returns the raw response for the caller to close.
func (c *Client) send(ctx context.Context, method, p string, query url.Values, body io.Reader, header http.Header) (*http.Response, error) {
	u, err := c.url(p, query)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("incus: %s %s: %w", method, p, err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("incus: %s %s: %w", method, p, err)
	}
	return resp, nil
}

// query sends a JSON body (when in is non-nil) and decodes the envelope, turning error envelopes into *StatusError.
func (c *Client) query(ctx context.Context, method, p string, query url.Values, in any, header http.Header) (*Response, http.Header, error) {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return nil, nil, fmt.Errorf("incus: %s %s: encode body: %w", method, p, err)
		}
		body = bytes.NewReader(data)
		if header == nil {
			header = http.Header{}
		}
		header.Set("Content-Type", "application/json")
	}
	resp, err := c.send(ctx, method, p, query, body, header)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	env, err := parseResponse(resp)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: %w", method, p, err)
	}
	return env, resp.Header, nil
}

// queryStruct performs a sync request, decodes its metadata into out and returns the ETag.
func (c *Client) queryStruct(ctx context.Context, method, p string, query url.Values, in, out any) (string, error) {
	env, hdr, err := c.query(ctx, method, p, query, in, nil)
	if err != nil {
		return "", err
	}
	if env.Type != SyncResponse {
		return "", fmt.Errorf("incus: %s %s: expected a sync response, got %q", method, p, env.Type)
	}
	if out != nil {
		if err := json.Unmarshal(env.Metadata, out); err != nil {
			return "", fmt.Errorf("incus: %s %s: decode metadata: %w", method, p, err)
		}
	}
	return hdr.Get("ETag"), nil
}

// queryOperation performs a request answered by a background operation and returns a handle to wait on.
func (c *Client) queryOperation(ctx context.Context, method, p string, in any, header http.Header) (*Operation, error) {
	env, _, err := c.query(ctx, method, p, nil, in, header)
	if err != nil {
		return nil, err
	}
	if env.Type != AsyncResponse {
		return nil, fmt.Errorf("incus: %s %s: expected an async response, got %q", method, p, env.Type)
	}
	var data APIOperation
	if len(env.Metadata) > 0 && string(env.Metadata) != "null" {
		if err := json.Unmarshal(env.Metadata, &data); err != nil {
			return nil, fmt.Errorf("incus: %s %s: decode operation: %w", method, p, err)
		}
	}
	if data.ID == "" {
		opURL, err := url.Parse(env.Operation)
		if err != nil || env.Operation == "" {
			return nil, fmt.Errorf("incus: %s %s: async response without an operation", method, p)
		}
		data.ID = path.Base(opURL.Path)
	}
	return &Operation{c: c, data: data}, nil
}

// getRaw GETs a non-JSON resource (file content, exec log) and returns its body and headers.
func (c *Client) getRaw(ctx context.Context, p string, query url.Values) ([]byte, http.Header, error) {
	resp, err := c.send(ctx, http.MethodGet, p, query, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 || isJSON(resp.Header) {
		env, err := parseResponse(resp)
		if err != nil {
			return nil, nil, fmt.Errorf("GET %s: %w", p, err)
		}
		return env.Metadata, resp.Header, nil
	}
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("incus: GET %s: read body: %w", p, err)
	}
	return data, resp.Header, nil
}

// isJSON reports whether the answer is a JSON envelope rather than raw content.
func isJSON(h http.Header) bool {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return mt == "application/json"
}

// parseResponse decodes the envelope; error envelopes and non-envelope HTTP errors become *StatusError.
func parseResponse(resp *http.Response) (*Response, error) {
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEnvelope))
	if err != nil {
		return nil, fmt.Errorf("incus: read response: %w", err)
	}
	var env Response
	if err := json.Unmarshal(data, &env); err != nil || env.Type == "" {
		if resp.StatusCode >= 400 {
			return nil, &StatusError{StatusCode: resp.StatusCode, Message: strings.TrimSpace(string(data))}
		}
		return nil, fmt.Errorf("incus: unexpected response (HTTP %d): %.200q", resp.StatusCode, data)
	}
	if env.Type == ErrorResponse {
		code := env.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return nil, &StatusError{StatusCode: code, Message: env.Error}
	}
	if resp.StatusCode >= 400 {
		return nil, &StatusError{StatusCode: resp.StatusCode, Message: env.Error}
	}
	return &env, nil
}

// instancePath builds /1.0/instances/<name>[/<sub>...] with each part escaped.
func instancePath(name string, sub ...string) string {
	var b strings.Builder
	b.WriteString("/1.0/instances/")
	b.WriteString(url.PathEscape(name))
	for _, s := range sub {
		b.WriteString("/")
		b.WriteString(s)
	}
	return b.String()
}
