package bus

import "time"

// SetSignedStoredSkew sets how far apart a record's signing and storing may
// be, for the test, and returns what puts it back.
func SetSignedStoredSkew(d time.Duration) func() {
	old := signedStoredSkew
	signedStoredSkew = d
	return func() { signedStoredSkew = old }
}
