package bus

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/skeinhq/skein/events"
)

// signed is a record its writer signs with its credentials' key (the
// heartbeat): readers that act on it (the CLI sealing a secret to its key,
// peers routing to its subnet) take it only from its own server's agent.
// An HMAC would not do: other agents, which hold no key of this server's,
// check it too.
type signed interface {
	// Signature returns the signer's JWT and the signature.
	Signature() (signer, sig string)
	// SetSignature sets them.
	SetSignature(signer, sig string)
	// Signing is when it was signed; SetSigning sets it.
	Signing() *time.Time
	SetSigning(t *time.Time)
}

// signedStoredSkew is how far apart the time a record was signed and the
// time the stream stored it may be: a write is retried for up to
// writeAttempt, a few times; an older copy had stored again is refused.
var signedStoredSkew = 2 * time.Minute

// recordBytes are what a record's signature covers: its bucket, its key and
// its JSON without the signature.
func recordBytes(bucket, key string, canonical []byte) []byte {
	return append([]byte("skein-record\n"+bucket+"\n"+key+"\n"), canonical...)
}

// signRecord signs v (a *T that is signed) with nc's credentials; nothing
// on a bus that asks for none.
func signRecord(nc *nats.Conn, bucket, key string, v any) error {
	sv, ok := v.(signed)
	if !ok || nc == nil || nc.Opts.UserJWT == nil || nc.Opts.SignatureCB == nil {
		return nil
	}
	sv.SetSignature("", "")
	now := time.Now().UTC()
	sv.SetSigning(&now)
	canon, err := json.Marshal(v)
	if err != nil {
		return err
	}
	token, err := nc.Opts.UserJWT()
	if err != nil {
		return fmt.Errorf("signing %s: %w", key, err)
	}
	sig, err := nc.Opts.SignatureCB(recordBytes(bucket, key, canon))
	if err != nil {
		return fmt.Errorf("signing %s: %w", key, err)
	}
	sv.SetSignature(token, base64.RawStdEncoding.EncodeToString(sig))
	return nil
}

// ErrNotSigned is a record (or a deletion) that none of those who may
// write it signed: a copy another server had stored under its key.
var ErrNotSigned = errors.New("not signed by its server's agent")

// verifyRecord checks that v (a *T that is signed), stored under key at
// stored (zero: not known), was signed by credentials that may write
// server's records in bucket, which the account of nc's own credentials
// issued, about when it was stored. Every record passes on a bus that asks
// for no credentials.
func verifyRecord(nc *nats.Conn, bucket, key, server string, v any, stored time.Time) error {
	sv, ok := v.(signed)
	if !ok || nc == nil || nc.Opts.UserJWT == nil {
		return nil
	}
	own, err := nc.Opts.UserJWT()
	if err != nil {
		return err
	}
	me, err := userClaims(own, "")
	if err != nil {
		return err
	}
	signer, sig := sv.Signature()
	if signer == "" || sig == "" {
		return fmt.Errorf("%w: it is not signed", ErrNotSigned)
	}
	uc, err := userClaims(signer, me.Issuer)
	if err != nil {
		return fmt.Errorf("%w: its signer: %v", ErrNotSigned, err)
	}
	if uc.Issuer != me.Issuer {
		return fmt.Errorf("%w: signed by credentials of another account", ErrNotSigned)
	}
	if !mayWrite(uc, bucket, server) {
		return fmt.Errorf("%w: signed by %s", ErrNotSigned, uc.Name)
	}
	raw, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: an unreadable signature", ErrNotSigned)
	}
	sv.SetSignature("", "")
	canon, err := json.Marshal(v)
	sv.SetSignature(signer, sig)
	if err != nil {
		return err
	}
	pk, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNotSigned, err)
	}
	if err := pk.Verify(recordBytes(bucket, key, canon), raw); err != nil {
		return fmt.Errorf("%w: the signature does not match", ErrNotSigned)
	}
	if at := sv.Signing(); at == nil || (!stored.IsZero() && (stored.Sub(*at) > signedStoredSkew || at.Sub(stored) > signedStoredSkew)) {
		return fmt.Errorf("%w: a copy stored at %s of a record signed at %v", ErrNotSigned, stored.UTC().Format(time.RFC3339), at)
	}
	// Checked: the record goes on without it (into outputs and events).
	sv.SetSignature("", "")
	sv.SetSigning(nil)
	return nil
}

// mayWrite says whether the credentials of uc may write server's records in
// bucket: the admin's and the scheduler's any; an agent's its own server's,
// but never the jobs or the scheduler's lease, which the scheduler acts on
// for every server.
func mayWrite(uc *jwt.UserClaims, bucket, server string) bool {
	switch uc.Name {
	case "admin", "scheduler":
		return slices.Contains(uc.Tags, "skein-role:"+uc.Name)
	case Role{Kind: "agent", Server: server}.Name():
		return slices.Contains(uc.Tags, "skein-role:agent") && !schedulerBuckets[bucket]
	}
	return false
}

// schedulerBuckets hold what only the admin and the scheduler write.
var schedulerBuckets = map[string]bool{"skein_jobs": true, "skein_leader": true}

// claimsSeen caches the claims of JWTs whose signature was checked and
// that the reader's account issued (no more than the credentials ever
// issued); bounded all the same.
var (
	claimsMu   sync.Mutex
	claimsSeen = map[string]*jwt.UserClaims{}
)

// maxClaimsSeen bounds claimsSeen: past it, it starts again.
const maxClaimsSeen = 4096

// userClaims decodes a user JWT, checking its signature by its issuer;
// issuer, when not "", must be its issuer for it to be cached.
func userClaims(token, issuer string) (*jwt.UserClaims, error) {
	claimsMu.Lock()
	c, ok := claimsSeen[token]
	claimsMu.Unlock()
	if ok {
		return c, nil
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, err
	}
	if issuer == "" || uc.Issuer == issuer {
		claimsMu.Lock()
		if len(claimsSeen) >= maxClaimsSeen {
			claimsSeen = map[string]*jwt.UserClaims{}
		}
		claimsSeen[token] = uc
		claimsMu.Unlock()
	}
	return uc, nil
}

// CheckedRecord is a record of bucket read raw (the dashboard shows records
// as JSON): its JSON without the signature when its writer may write key's
// records, an error when not or when bucket holds no record type.
func CheckedRecord(nc *nats.Conn, bucket, key string, raw []byte, stored time.Time) ([]byte, error) {
	for _, spec := range events.Specs() {
		if spec.Kind != events.KindState || spec.Bucket != bucket {
			continue
		}
		v := reflect.New(spec.Go).Interface()
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("bad %s record %q: %w", spec.Type, key, err)
		}
		if err := verifyRecord(nc, bucket, key, serverOfKey(bucket, key), v, stored); err != nil {
			return nil, fmt.Errorf("%s record %q: %w", spec.Type, key, err)
		}
		return json.Marshal(v)
	}
	return nil, fmt.Errorf("bucket %s holds no record type", bucket)
}

// tombstone is the body of a deletion's marker, signed like a record: a
// reader takes a deletion only from whoever may write the record, so that
// another server's marker had stored under the key deletes nothing.
type tombstone struct {
	// Deleted is the key deleted.
	Deleted string `json:"deleted"`
	events.Signed
}

// kvOperation is the header that marks a deletion in a KV bucket (nats.go's
// own name for it is unexported).
const kvOperation = "KV-Operation"

// isDeletion says whether headers mark a deletion (or a purge) of a key.
func isDeletion(h nats.Header) bool {
	op := h.Get(kvOperation)
	return op == "DEL" || op == "PURGE"
}

// signedDeletion is the body of the marker of key's deletion from bucket,
// signed with nc's credentials (unsigned on a bus that asks for none).
func signedDeletion(nc *nats.Conn, bucket, key string) ([]byte, error) {
	t := tombstone{Deleted: key}
	if err := signRecord(nc, bucket, key, &t); err != nil {
		return nil, err
	}
	return json.Marshal(t)
}

// checkDeletion checks the body of a deletion's marker of key, stored at
// stored: signed by credentials that may write the record, about then.
// Every deletion passes on a bus that asks for no credentials.
func checkDeletion(nc *nats.Conn, bucket, key string, body []byte, stored time.Time) error {
	if nc == nil || nc.Opts.UserJWT == nil {
		return nil
	}
	var t tombstone
	if len(body) == 0 {
		return fmt.Errorf("%w: a deletion without a signature", ErrNotSigned)
	}
	if err := json.Unmarshal(body, &t); err != nil || t.Deleted != key {
		return fmt.Errorf("%w: a deletion's marker that is not key %s's", ErrNotSigned, key)
	}
	if err := verifyRecord(nc, bucket, key, serverOfKey(bucket, key), &t, stored); err != nil {
		return fmt.Errorf("a deletion: %w", err)
	}
	return nil
}

// CheckedDeletion checks a deletion of bucket's key read raw (the
// dashboard follows records raw): nil when whoever may write the record
// deleted it.
func CheckedDeletion(nc *nats.Conn, bucket, key string, body []byte, stored time.Time) error {
	return checkDeletion(nc, bucket, key, body, stored)
}

// ImageSeal is what whoever stores an image on the bus signs of it: agents
// install an image only when the admin or the scheduler sealed it, so that
// another server cannot have bytes of its own installed everywhere (a
// direct get's reply can be had stored in the images store).
type ImageSeal struct {
	// Alias is the name the image is stored under.
	Alias string `json:"alias"`
	// Fingerprint is its SHA-256.
	Fingerprint string `json:"fingerprint"`
	// Recipe is the hash of the recipe it was built from.
	Recipe string `json:"recipe,omitempty"`
	events.Signed
}

// SealImage signs seal with nc's credentials (nothing on a bus that asks
// for none) and returns it as one line of JSON.
func SealImage(nc *nats.Conn, seal ImageSeal) (string, error) {
	if err := signRecord(nc, ImagesBucket, seal.Alias, &seal); err != nil {
		return "", err
	}
	b, err := json.Marshal(seal)
	return string(b), err
}

// OpenImageSeal reads raw, the seal of the image stored as alias: an error
// when there is none, when it is another alias's, or (on a bus with
// credentials) when neither the admin nor the scheduler signed it.
func OpenImageSeal(nc *nats.Conn, alias, raw string) (ImageSeal, error) {
	var s ImageSeal
	if raw == "" {
		return s, fmt.Errorf("image %s on the bus has no seal: store it again with skein images push", alias)
	}
	if err := json.Unmarshal([]byte(raw), &s); err != nil || s.Alias != alias || s.Fingerprint == "" {
		return s, fmt.Errorf("image %s on the bus has a seal that is not its own: store it again with skein images push", alias)
	}
	if err := verifyRecord(nc, ImagesBucket, alias, "", &s, time.Time{}); err != nil {
		return s, fmt.Errorf("image %s on the bus was not sealed by the admin (%w): not installed; store it again with skein images push", alias, err)
	}
	return s, nil
}
