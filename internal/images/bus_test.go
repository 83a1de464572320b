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
		if err := Store(ctx, conn.NC, obs, alias, header, "", "", bytes.NewReader(image)); err != nil {
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
	if f, err := Fetch(ctx, conn.NC, obs, "good", install); err != nil || f != fp || !bytes.Equal(got, image) {
		t.Fatalf("Fetch(good) = %s, %v (installed %d bytes of %d)", f, err, len(got), len(image))
	}
	got = nil
	put("forged", strings.Repeat("0", 64))
	if _, err := Fetch(ctx, conn.NC, obs, "forged", install); err == nil || !strings.Contains(err.Error(), "not imported") || got != nil {
		t.Errorf("Fetch of an image whose hash is not its fingerprint: %v (installed: %v)", err, got != nil)
	}
	lying := func(ctx context.Context, path string) (string, error) { return "other", nil }
	if _, err := Fetch(ctx, conn.NC, obs, "good", lying); err == nil {
		t.Error("an import under another fingerprint was accepted")
	}
	if _, err := Fetch(ctx, conn.NC, obs, "missing", install); err == nil || !strings.Contains(err.Error(), "not on the bus") {
		t.Errorf("Fetch of a missing image: %v", err)
	}
}

// TestFetchTakesOnlyTheAdminsImages (issue 23, attack 4): an agent could
// have bytes of its own stored as an image (a direct get's reply goes
// anywhere), with a fingerprint that matches them. Another server's agent
// installs only an image the admin sealed: one sealed by agent s1, one
// without a seal and one whose seal is another alias's are refused and
// nothing is installed; the admin's is installed.
func TestFetchTakesOnlyTheAdminsImages(t *testing.T) {
	ctx := context.Background()
	_, url, a := testutil.AuthBus(t)
	admin := testutil.Connect(t, url, a, bus.Role{Kind: "admin"})
	s1 := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "s1"})
	s2 := testutil.Connect(t, url, a, bus.Role{Kind: "agent", Server: "s2"})
	obs, err := admin.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := s2.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		t.Fatal(err)
	}
	sum := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	real, evil := []byte("the admin's image"), []byte("s1's image")
	var installed [][]byte
	install := func(ctx context.Context, path string) (string, error) {
		b, err := os.ReadFile(path)
		installed = append(installed, b)
		return sum(b), err
	}
	if err := Store(ctx, admin.NC, obs, "app", sum(real), "", "", bytes.NewReader(real)); err != nil {
		t.Fatal(err)
	}
	if fp, err := Fetch(ctx, s2.NC, theirs, "app", install); err != nil || fp != sum(real) {
		t.Fatalf("s2 fetching the admin's image: %s %v", fp, err)
	}
	// What s1 could have stored: headers as the store writes them.
	s1Seal, err := bus.SealImage(s1.NC, bus.ImageSeal{Alias: "app", Fingerprint: sum(evil)})
	if err != nil {
		t.Fatal(err)
	}
	otherAlias, err := bus.SealImage(admin.NC, bus.ImageSeal{Alias: "db", Fingerprint: sum(evil)})
	if err != nil {
		t.Fatal(err)
	}
	for name, seal := range map[string]string{"sealed by agent s1": s1Seal, "without a seal": "", "sealed for another alias": otherAlias} {
		installed = nil
		h := nats.Header{HeaderFingerprint: {sum(evil)}}
		if seal != "" {
			h.Set(HeaderSeal, seal)
		}
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: "app", Headers: h}, bytes.NewReader(evil)); err != nil {
			t.Fatal(err)
		}
		_, err := Fetch(ctx, s2.NC, theirs, "app", install)
		if err == nil || !strings.Contains(err.Error(), "skein images push") || installed != nil {
			t.Errorf("%s: s2 fetched s1's image: %v (installed %q)", name, err, installed)
		}
	}
}
