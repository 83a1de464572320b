package incus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// ExecResult is the outcome of a non-interactive command.
type ExecResult struct {
	// ExitCode is the command's exit status (127 when not found, 128+n when killed by signal n).
	ExitCode int
	// Stdout is everything the command wrote to standard output.
	Stdout []byte
	// Stderr is everything the command wrote to standard error.
	Stderr []byte
}

// ExecInstance runs a command to completion with output recorded server side, then fetches and deletes the logs; it needs no websockets.
func (c *Client) ExecInstance(ctx context.Context, name string, req InstanceExecPost) (*ExecResult, error) {
	req.RecordOutput = true
	req.WaitForWS = false
	req.Interactive = false
	op, err := c.queryOperation(ctx, http.MethodPost, instancePath(name, "exec"), req, nil)
	if err != nil {
		return nil, err
	}
	waitErr := op.Wait(ctx)
	md := op.Get().Metadata
	logs := execLogURLs(md)
	// Deleted after the caller has its answer: each is a round trip to incusd.
	defer func() { go c.deleteLogs(context.WithoutCancel(ctx), logs) }()
	if waitErr != nil {
		return nil, fmt.Errorf("incus: exec %v in %s: %w", req.Command, name, waitErr)
	}
	ret, ok := md["return"].(float64)
	if !ok {
		return nil, fmt.Errorf("incus: exec %v in %s: operation has no exit code", req.Command, name)
	}
	res := &ExecResult{ExitCode: int(ret)}
	// Both logs at once.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, fd := range []string{"1", "2"} {
		u, ok := logs[fd]
		if !ok {
			continue
		}
		dst := &res.Stdout
		if fd == "2" {
			dst = &res.Stderr
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			data, _, err := c.getRaw(ctx, u.EscapedPath(), u.Query())
			if err != nil {
				errs[i] = fmt.Errorf("incus: exec %v in %s: fetch fd %s: %w", req.Command, name, fd, err)
				return
			}
			*dst = data
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return res, nil
}

// execLogURLs extracts metadata.output ({"1": url, "2": url}) of a recorded exec.
func execLogURLs(md map[string]any) map[string]*url.URL {
	out := map[string]*url.URL{}
	raw, _ := md["output"].(map[string]any)
	for fd, v := range raw {
		s, ok := v.(string)
		if !ok {
			continue
		}
		if u, err := url.Parse(s); err == nil {
			out[fd] = u
		}
	}
	return out
}

// deleteLogs removes recorded exec output best-effort, because failing to
// clean up must not fail a finished command; each deletion is bounded.
func (c *Client) deleteLogs(ctx context.Context, logs map[string]*url.URL) {
	for _, u := range logs {
		dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, _, _ = c.query(dctx, http.MethodDelete, u.EscapedPath(), u.Query(), nil, nil)
		cancel()
	}
}
