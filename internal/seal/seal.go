// Package seal keeps secrets (TLS private keys, passwords) sealed on their way
// to the one agent that needs them: each agent has a curve key pair (nkeys
// xkeys: X25519 with XSalsa20-Poly1305), publishes its public key in its
// heartbeat, and only it can open what is sealed to that key. The sender's key
// is made for each secret and thrown away, so nothing that travels the bus,
// sits in a stream, a record, an event or a log holds a secret in clear.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
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
	k, err := Load(path)
	if !errors.Is(err, os.ErrNotExist) {
		return k, err
	}
	kp, err := nkeys.CreateCurveKeys()
	if err != nil {
		return nil, err
	}
	seed, err := kp.Seed()
	if err != nil {
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

// Load reads the key pair in path; unlike LoadOrCreate it makes none.
func Load(path string) (*Keys, error) {
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	kp, err := nkeys.FromCurveSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("seal: the key in %s is not a curve seed: %w", path, err)
	}
	return &Keys{kp: kp}, nil
}

// dataMagic starts what SealData makes, so that it is never taken for plain data.
const dataMagic = "skein-sealed-1\n"

// SealData encrypts data of any size under a new 256-bit key (AES-GCM) and
// returns the box and the key; the key is then sealed To each reader.
func SealData(data []byte) (box, key []byte, err error) {
	key = make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, nil, err
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	box = make([]byte, 0, len(dataMagic)+len(nonce)+len(data)+aead.Overhead())
	box = append(append([]byte(dataMagic), nonce...), aead.Seal(nil, nonce, data, []byte(dataMagic))...)
	return box, key, nil
}

// OpenData decrypts a box of SealData with its key; a changed byte fails it.
func OpenData(box, key []byte) ([]byte, error) {
	aead, err := gcm(key)
	if err != nil {
		return nil, err
	}
	rest, ok := bytes.CutPrefix(box, []byte(dataMagic))
	if !ok || len(rest) < aead.NonceSize()+aead.Overhead() {
		return nil, errors.New("not data sealed by skein")
	}
	out, err := aead.Open(nil, rest[:aead.NonceSize()], rest[aead.NonceSize():], []byte(dataMagic))
	if err != nil {
		return nil, errors.New("the sealed data is damaged or its key is another's")
	}
	return out, nil
}

func gcm(key []byte) (cipher.AEAD, error) {
	if len(key) != 32 {
		return nil, fmt.Errorf("a data key is 32 bytes, not %d", len(key))
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}
