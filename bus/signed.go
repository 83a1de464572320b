package bus

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sync"

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
}

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

// errNotSigned is a signed record that its server's agent did not sign.
var errNotSigned = errors.New("not signed by its server's agent")

// verifyRecord checks that v (a *T that is signed), stored under key, was
// signed by credentials of server's agent (or the admin's) that the account
// of nc's own credentials issued. Every record passes on a bus that asks for
// no credentials.
func verifyRecord(nc *nats.Conn, bucket, key, server string, v any) error {
	sv, ok := v.(signed)
	if !ok || nc == nil || nc.Opts.UserJWT == nil {
		return nil
	}
	own, err := nc.Opts.UserJWT()
	if err != nil {
		return err
	}
	me, err := userClaims(own)
	if err != nil {
		return err
	}
	signer, sig := sv.Signature()
	if signer == "" || sig == "" {
		return fmt.Errorf("%w: it is not signed", errNotSigned)
	}
	uc, err := userClaims(signer)
	if err != nil {
		return fmt.Errorf("%w: its signer: %v", errNotSigned, err)
	}
	if uc.Issuer != me.Issuer {
		return fmt.Errorf("%w: signed by credentials of another account", errNotSigned)
	}
	if !mayWrite(uc, server) {
		return fmt.Errorf("%w: signed by %s", errNotSigned, uc.Name)
	}
	raw, err := base64.RawStdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w: an unreadable signature", errNotSigned)
	}
	sv.SetSignature("", "")
	canon, err := json.Marshal(v)
	sv.SetSignature(signer, sig)
	if err != nil {
		return err
	}
	pk, err := nkeys.FromPublicKey(uc.Subject)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotSigned, err)
	}
	if err := pk.Verify(recordBytes(bucket, key, canon), raw); err != nil {
		return fmt.Errorf("%w: the signature does not match", errNotSigned)
	}
	// Checked: the record goes on without it (into outputs and events).
	sv.SetSignature("", "")
	return nil
}

// mayWrite says whether the credentials of uc may write server's records:
// its agent's, the admin's and the scheduler's.
func mayWrite(uc *jwt.UserClaims, server string) bool {
	switch uc.Name {
	case Role{Kind: "agent", Server: server}.Name():
		return slices.Contains(uc.Tags, "skein-role:agent")
	case "admin", "scheduler":
		return slices.Contains(uc.Tags, "skein-role:"+uc.Name)
	}
	return false
}

// claimsSeen caches the claims of JWTs whose signature was checked: only
// valid ones, so it holds no more than the credentials ever issued.
var claimsSeen sync.Map // string -> *jwt.UserClaims

// userClaims decodes a user JWT, checking its signature by its issuer.
func userClaims(token string) (*jwt.UserClaims, error) {
	if c, ok := claimsSeen.Load(token); ok {
		return c.(*jwt.UserClaims), nil
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return nil, err
	}
	claimsSeen.Store(token, uc)
	return uc, nil
}

// CheckedRecord is a record of bucket read raw (the dashboard shows records
// as JSON): its JSON without the signature when its writer may write key's
// records, an error when not or when bucket holds no record type.
func CheckedRecord(nc *nats.Conn, bucket, key string, raw []byte) ([]byte, error) {
	for _, spec := range events.Specs() {
		if spec.Kind != events.KindState || spec.Bucket != bucket {
			continue
		}
		v := reflect.New(spec.Go).Interface()
		if err := json.Unmarshal(raw, v); err != nil {
			return nil, fmt.Errorf("bad %s record %q: %w", spec.Type, key, err)
		}
		if err := verifyRecord(nc, bucket, key, serverOfKey(bucket, key), v); err != nil {
			return nil, fmt.Errorf("%s record %q: %w", spec.Type, key, err)
		}
		return json.Marshal(v)
	}
	return nil, fmt.Errorf("bucket %s holds no record type", bucket)
}
