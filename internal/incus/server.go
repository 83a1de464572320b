package incus

import (
	"context"
	"net/http"
)

// GetServer fetches GET /1.0, the cheapest call that proves the daemon is up and says which version it runs.
func (c *Client) GetServer(ctx context.Context) (*Server, error) {
	var s Server
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0", nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
