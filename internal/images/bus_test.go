package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/testutil"
)

// Fetch installs what was stored only when its hash is the fingerprint it
// was stored with, and only when Incus fingerprints it the same.
func TestFetchChecksTheHash(t *testing.T) {
	ctx := context.Background()
	conn, _ := testutil.Bus(t)
	obs, err := conn.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	image := bytes.Repeat([]byte("skein image "), 50000) // several chunks
	sum := sha256.Sum256(image)
	fp := hex.EncodeToString(sum[:])
	put := func(alias, header string) {
		t.Helper()
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: alias, Headers: nats.Header{HeaderFingerprint: {header}}}, bytes.NewReader(image)); err != nil {
			t.Fatal(err)
		}
	}
	var got []byte
	install := func(ctx context.Context, path string) (string, error) {
		b, err := os.ReadFile(path)
		got = b
		s := sha256.Sum256(b)
		return hex.EncodeToString(s[:]), err
	}
	put("good", fp)
	if f, err := Fetch(ctx, obs, "good", install); err != nil || f != fp || !bytes.Equal(got, image) {
		t.Fatalf("Fetch(good) = %s, %v (installed %d bytes of %d)", f, err, len(got), len(image))
	}
	got = nil
	put("forged", strings.Repeat("0", 64))
	if _, err := Fetch(ctx, obs, "forged", install); err == nil || !strings.Contains(err.Error(), "not imported") || got != nil {
		t.Errorf("Fetch of an image whose hash is not its fingerprint: %v (installed: %v)", err, got != nil)
	}
	lying := func(ctx context.Context, path string) (string, error) { return "other", nil }
	if _, err := Fetch(ctx, obs, "good", lying); err == nil {
		t.Error("an import under another fingerprint was accepted")
	}
	if _, err := Fetch(ctx, obs, "missing", install); err == nil || !strings.Contains(err.Error(), "not on the bus") {
		t.Errorf("Fetch of a missing image: %v", err)
	}
}
