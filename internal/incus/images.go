package incus

import (
	"context"
	"net/http"
	"net/url"
)

// GetImageAlias resolves an image alias to its target fingerprint, e.g. to check an image exists before creating instances.
func (c *Client) GetImageAlias(ctx context.Context, name string) (*ImageAliasesEntry, error) {
	var a ImageAliasesEntry
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/images/aliases/"+url.PathEscape(name), nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}
