package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/incus"
)

// Headers of a stored image.
const (
	// HeaderFingerprint is the image's SHA-256: the file's, and Incus's fingerprint.
	HeaderFingerprint = "Skein-Fingerprint"
	// HeaderRecipe is the recipe hash it was built from.
	HeaderRecipe = "Skein-Recipe"
	// HeaderSeal is its bus.ImageSeal: what fetchers check it by.
	HeaderSeal = "Skein-Seal"
)

// Stored describes the image stored under an alias, nil when there is none.
func Stored(ctx context.Context, obs jetstream.ObjectStore, alias string) (*jetstream.ObjectInfo, error) {
	info, err := obs.GetInfo(ctx, alias)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, nil
	}
	return info, err
}

// Push stores the image that alias names in the Incus of cl in the object
// store, once: nothing when the stored one has its fingerprint. It reports
// whether it stored it.
func Push(ctx context.Context, nc *nats.Conn, obs jetstream.ObjectStore, cl *incus.Client, alias string) (bool, error) {
	cur, err := Current(ctx, cl, alias)
	if err != nil {
		return false, err
	}
	if cur == nil {
		return false, fmt.Errorf("no image %s on this machine: build it first (skein images build)", alias)
	}
	if info, err := Stored(ctx, obs, alias); err != nil {
		return false, err
	} else if info != nil && info.Headers.Get(HeaderFingerprint) == cur.Fingerprint {
		// Sealed by whoever may store images: there already.
		if _, err := bus.OpenImageSeal(nc, alias, info.Headers.Get(HeaderSeal)); err == nil {
			return false, nil
		}
	}
	rc, err := cl.ExportImage(ctx, cur.Fingerprint)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	if err := Store(ctx, nc, obs, alias, cur.Fingerprint, cur.Properties[PropRecipe], cur.Properties["description"], rc); err != nil {
		return false, err
	}
	return true, nil
}

// Store stores the image read from r under alias, sealed with nc's
// credentials (bus.ImageSeal): fetchers install it only if the admin or the
// scheduler sealed it, and only if r's SHA-256 is fingerprint.
func Store(ctx context.Context, nc *nats.Conn, obs jetstream.ObjectStore, alias, fingerprint, recipe, description string, r io.Reader) error {
	seal, err := bus.SealImage(nc, bus.ImageSeal{Alias: alias, Fingerprint: fingerprint, Recipe: recipe})
	if err != nil {
		return fmt.Errorf("sealing %s: %w", alias, err)
	}
	meta := jetstream.ObjectMeta{Name: alias, Description: description,
		Headers: nats.Header{HeaderFingerprint: {fingerprint}, HeaderRecipe: {recipe}, HeaderSeal: {seal}}}
	if _, err := obs.Put(ctx, meta, r); err != nil {
		return fmt.Errorf("storing %s on the bus: %w", alias, err)
	}
	return nil
}

// Fetch copies the image stored under alias to a file, checks that its
// SHA-256 is the fingerprint it was sealed with (by the admin or the
// scheduler, on a bus with credentials), and gives the file to install
// (which imports it and returns Incus's fingerprint, checked too).
func Fetch(ctx context.Context, nc *nats.Conn, obs jetstream.ObjectStore, alias string, install func(ctx context.Context, path string) (string, error)) (string, error) {
	info, err := Stored(ctx, obs, alias)
	if err != nil {
		return "", err
	}
	if info == nil {
		return "", fmt.Errorf("image %s is not on the bus: run skein images build on a machine that has Incus and a connection to the bus", alias)
	}
	seal, err := bus.OpenImageSeal(nc, alias, info.Headers.Get(HeaderSeal))
	if err != nil {
		return "", err
	}
	want := seal.Fingerprint
	r, err := obs.Get(ctx, alias)
	if err != nil {
		return "", err
	}
	defer r.Close()
	f, err := os.CreateTemp("/var/tmp", "skein-fetch-*.image")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	h := sha256.New()
	_, err = io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("fetching %s from the bus: %w", alias, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return "", fmt.Errorf("image %s from the bus hashes to %s, stored as %s: not imported", alias, got, want)
	}
	fp, err := install(ctx, f.Name())
	if err != nil {
		return "", err
	}
	if fp != want {
		return "", fmt.Errorf("image %s imported as %s, stored as %s", alias, fp, want)
	}
	return fp, nil
}
