package incus

import (
	"context"
	"net/http"
	"net/url"
)

// GetInstances lists the project's instances with their state in one request (recursion=2).
func (c *Client) GetInstances(ctx context.Context) ([]InstanceFull, error) {
	var list []InstanceFull
	q := url.Values{"recursion": {"2"}}
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/instances", q, nil, &list); err != nil {
		return nil, err
	}
	return list, nil
}

// GetInstance fetches an instance and its ETag, which UpdateInstance needs to avoid overwriting concurrent changes.
func (c *Client) GetInstance(ctx context.Context, name string) (*Instance, string, error) {
	var inst Instance
	etag, err := c.queryStruct(ctx, http.MethodGet, instancePath(name), nil, nil, &inst)
	if err != nil {
		return nil, "", err
	}
	return &inst, etag, nil
}

// GetInstanceFull fetches an instance with its live state in one request (recursion=1).
func (c *Client) GetInstanceFull(ctx context.Context, name string) (*InstanceFull, error) {
	var inst InstanceFull
	if _, err := c.queryStruct(ctx, http.MethodGet, instancePath(name), url.Values{"recursion": {"1"}}, nil, &inst); err != nil {
		return nil, err
	}
	return &inst, nil
}

// GetInstanceState fetches live runtime state (status, addresses, usage).
func (c *Client) GetInstanceState(ctx context.Context, name string) (*InstanceState, error) {
	var st InstanceState
	if _, err := c.queryStruct(ctx, http.MethodGet, instancePath(name, "state"), nil, nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// CreateInstance starts creating an instance; the instance is only usable once the returned operation succeeds.
func (c *Client) CreateInstance(ctx context.Context, req InstancesPost) (*Operation, error) {
	return c.queryOperation(ctx, http.MethodPost, "/1.0/instances", req, nil)
}

// UpdateInstance replaces the instance's writable fields (PUT); a non-empty etag is sent as If-Match so stale writes fail with 412.
func (c *Client) UpdateInstance(ctx context.Context, name string, put InstancePut, etag string) (*Operation, error) {
	var h http.Header
	if etag != "" {
		h = http.Header{"If-Match": {etag}}
	}
	return c.queryOperation(ctx, http.MethodPut, instancePath(name), put, h)
}

// UpdateInstanceState starts, stops, restarts, freezes or unfreezes an instance.
func (c *Client) UpdateInstanceState(ctx context.Context, name string, state InstanceStatePut) (*Operation, error) {
	return c.queryOperation(ctx, http.MethodPut, instancePath(name, "state"), state, nil)
}

// DeleteInstance deletes a stopped instance (a running one is refused).
func (c *Client) DeleteInstance(ctx context.Context, name string) (*Operation, error) {
	return c.queryOperation(ctx, http.MethodDelete, instancePath(name), nil, nil)
}
