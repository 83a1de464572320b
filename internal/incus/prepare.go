package incus

import (
	"context"
	"net/http"
	"net/url"
)

// Named is the part of a project or storage pool that skein reads: that it
// exists, its name and its configuration.
type Named struct {
	// Name is the object's name.
	Name string `json:"name"`
	// Config holds its options.
	Config map[string]string `json:"config"`
}

// GetProject fetches a project (GET /1.0/projects/<name>).
func (c *Client) GetProject(ctx context.Context, name string) (*Named, error) {
	var p Named
	if _, err := c.WithProject("").queryStruct(ctx, http.MethodGet, "/1.0/projects/"+url.PathEscape(name), nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// CreateProject creates a project with config (POST /1.0/projects).
func (c *Client) CreateProject(ctx context.Context, name string, config map[string]string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodPost, "/1.0/projects", nil, map[string]any{"name": name, "config": config, "description": "skein"}, nil)
	return err
}

// DeleteProject deletes an empty project.
func (c *Client) DeleteProject(ctx context.Context, name string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodDelete, "/1.0/projects/"+url.PathEscape(name), nil, nil, nil)
	return err
}

// GetStoragePool fetches a storage pool (GET /1.0/storage-pools/<name>).
func (c *Client) GetStoragePool(ctx context.Context, name string) (*Named, error) {
	var p Named
	if _, err := c.WithProject("").queryStruct(ctx, http.MethodGet, "/1.0/storage-pools/"+url.PathEscape(name), nil, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// CreateStoragePool creates a storage pool of driver (POST /1.0/storage-pools).
func (c *Client) CreateStoragePool(ctx context.Context, name, driver string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodPost, "/1.0/storage-pools", nil, map[string]any{"name": name, "driver": driver, "description": "skein"}, nil)
	return err
}

// DeleteStoragePool deletes an unused storage pool.
func (c *Client) DeleteStoragePool(ctx context.Context, name string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodDelete, "/1.0/storage-pools/"+url.PathEscape(name), nil, nil, nil)
	return err
}

// GetNetworks lists the managed and host networks with their configuration
// (GET /1.0/networks?recursion=1), in the default project.
func (c *Client) GetNetworks(ctx context.Context) ([]Network, error) {
	var ns []Network
	if _, err := c.WithProject("").queryStruct(ctx, http.MethodGet, "/1.0/networks", url.Values{"recursion": {"1"}}, nil, &ns); err != nil {
		return nil, err
	}
	return ns, nil
}

// CreateNetwork creates a network of type typ with config (POST /1.0/networks), in the default project.
func (c *Client) CreateNetwork(ctx context.Context, name, typ string, config map[string]string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodPost, "/1.0/networks", nil, map[string]any{"name": name, "type": typ, "config": config, "description": "skein"}, nil)
	return err
}

// DeleteNetwork deletes an unused network.
func (c *Client) DeleteNetwork(ctx context.Context, name string) error {
	_, err := c.WithProject("").queryStruct(ctx, http.MethodDelete, "/1.0/networks/"+url.PathEscape(name), nil, nil, nil)
	return err
}
