// Package seal keeps secrets (TLS private keys, passwords) sealed on their way
// to the one agent that needs them: each agent has a curve key pair (nkeys
// xkeys: X25519 with XSalsa20-Poly1305), publishes its public key in its
// heartbeat, and only it can open what is sealed to that key. The sender's key
// is made for each secret and thrown away, so nothing that travels the bus,
// sits in a stream, a record, an event or a log holds a secret in clear.
package seal

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"

	"github.com/skeinhq/skein/events"
)

// Keys is an agent's curve key pair.
type Keys struct {
	kp nkeys.KeyPair
}

// LoadOrCreate reads the key pair in path, or makes one and writes it there
// (mode 0600, its directory 0700) when there is none.
func LoadOrCreate(path string) (*Keys, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := nkeys.CreateCurveKeys()
		if err != nil {
			return nil, err
		}
		if seed, err = kp.Seed(); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		return &Keys{kp: kp}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	kp, err := nkeys.FromCurveSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("seal: the key in %s is not a curve seed: %w", path, err)
	}
	return &Keys{kp: kp}, nil
}

// New makes a key pair that lives only in memory (tests).
func New() (*Keys, error) {
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	return &Keys{kp: kp}, nil
}

// Public is the public key others seal to ("X...").
func (k *Keys) Public() string {
	pub, _ := k.kp.PublicKey()
	return pub
}

// Open opens a secret sealed to this key pair.
func (k *Keys) Open(s events.Sealed) ([]byte, error) {
	if s.Sender == "" || s.Box == "" {
		return nil, errors.New("the secret is missing (nothing sealed)")
	}
	box, err := base64.StdEncoding.DecodeString(s.Box)
	if err != nil {
		return nil, fmt.Errorf("the sealed secret is not base64: %w", err)
	}
	out, err := k.kp.Open(box, s.Sender)
	if err != nil {
		return nil, errors.New("the secret was sealed for another key: was it sent to the right server, or did its agent's key change?")
	}
	return out, nil
}

// To seals secret so that only the holder of recipient's private key opens it.
func To(recipient string, secret []byte) (events.Sealed, error) {
	if !nkeys.IsValidPublicCurveKey(recipient) {
		return events.Sealed{}, fmt.Errorf("%q is not a public curve key", recipient)
	}
	sender, err := nkeys.CreateCurveKeys()
	if err != nil {
		return events.Sealed{}, err
	}
	defer sender.Wipe()
	box, err := sender.Seal(secret, recipient)
	if err != nil {
		return events.Sealed{}, err
	}
	pub, _ := sender.PublicKey()
	return events.Sealed{Sender: pub, Box: base64.StdEncoding.EncodeToString(box)}, nil
}
