package bus

import (
	"context"
	"time"

	"github.com/skeinhq/skein/events"
)

// SetSignedStoredSkew sets how far apart a record's signing and storing may
// be, for the test, and returns what puts it back.
func SetSignedStoredSkew(d time.Duration) func() {
	old := signedStoredSkew
	signedStoredSkew = d
	return func() { signedStoredSkew = old }
}

// SetLookup makes f the client's read of stored results, for the test.
func SetLookup(c *Client, f func(ctx context.Context, server, id string) (*events.Result, bool, error)) {
	c.lookup = f
}
