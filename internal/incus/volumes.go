package incus

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path"
)

// volumePath is the path of a custom storage volume of pool, or of the pool's
// custom volumes when name is "".
func volumePath(pool, name string) string {
	p := "/1.0/storage-pools/" + url.PathEscape(pool) + "/volumes/custom"
	if name != "" {
		p += "/" + url.PathEscape(name)
	}
	return p
}

// GetStorageVolume fetches a custom storage volume of the client's project.
func (c *Client) GetStorageVolume(ctx context.Context, pool, name string) (*Named, error) {
	var v Named
	if _, err := c.queryStruct(ctx, http.MethodGet, volumePath(pool, name), nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// CreateStorageVolume creates a custom filesystem volume in pool.
func (c *Client) CreateStorageVolume(ctx context.Context, pool, name string) error {
	return c.do(ctx, http.MethodPost, volumePath(pool, ""), map[string]any{"name": name, "content_type": "filesystem", "description": "skein", "config": map[string]string{}})
}

// DeleteStorageVolume deletes a custom volume (it must be attached nowhere).
func (c *Client) DeleteStorageVolume(ctx context.Context, pool, name string) error {
	return c.do(ctx, http.MethodDelete, volumePath(pool, name), nil)
}

// do performs a request that Incus may answer at once or with a background
// operation, and waits for the operation.
func (c *Client) do(ctx context.Context, method, p string, in any) error {
	env, _, err := c.query(ctx, method, p, nil, in, nil)
	if err != nil {
		return err
	}
	if env.Type != AsyncResponse {
		return nil
	}
	var data APIOperation
	if len(env.Metadata) > 0 && string(env.Metadata) != "null" {
		if err := json.Unmarshal(env.Metadata, &data); err != nil {
			return fmt.Errorf("incus: %s %s: decode operation: %w", method, p, err)
		}
	}
	if data.ID == "" {
		u, err := url.Parse(env.Operation)
		if err != nil || env.Operation == "" {
			return fmt.Errorf("incus: %s %s: async response without an operation", method, p)
		}
		data.ID = path.Base(u.Path)
	}
	return (&Operation{c: c, data: data}).Wait(ctx)
}
