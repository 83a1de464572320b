package incus

import (
	"context"
	"net/http"
	"net/url"
)

// GetNetwork fetches a network, e.g. to read Config["ipv4.address"] of a bridge.
func (c *Client) GetNetwork(ctx context.Context, name string) (*Network, error) {
	var n Network
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/networks/"+url.PathEscape(name), nil, nil, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// PatchNetworkConfig changes only the given config keys of a network (PATCH);
// Incus restarts the bridge's dnsmasq when a dnsmasq key changes.
func (c *Client) PatchNetworkConfig(ctx context.Context, name string, config map[string]string) error {
	_, err := c.queryStruct(ctx, http.MethodPatch, "/1.0/networks/"+url.PathEscape(name), nil, map[string]any{"config": config}, nil)
	return err
}
