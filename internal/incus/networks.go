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
