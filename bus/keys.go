package bus

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync"
)

// HeaderMAC carries a command's or a result's authentication code: an
// HMAC-SHA256, under the key of the server the command is for (the agent
// answering it holds that key alone), of the subject and the body.
// JetStream makes the server publish stored messages wherever a reader asks
// (a direct get's reply, a push consumer's delivery), and no subject
// permission covers that publish: an agent acts only on what carries its
// key's code, and clients only on results that carry it.
const HeaderMAC = "Skein-Mac"

// Keys are the secrets in a role's credentials that make and check MACs:
// the admin and the scheduler hold the bus's key, from which every server's
// key derives; an agent holds its own server's key only; the observer none.
type Keys struct {
	bus    []byte
	server string
	own    *serverKey

	mu      sync.Mutex
	derived map[string]*serverKey
}

// serverKey is one server's key, with the HMACs made with it for reuse.
type serverKey struct {
	key  []byte
	macs sync.Pool // of hash.Hash
}

func newServerKey(key []byte) *serverKey {
	k := &serverKey{key: key}
	k.macs.New = func() any { return hmac.New(sha256.New, key) }
	return k
}

// ErrNoKey is a MAC asked of credentials that do not hold the server's key.
var ErrNoKey = errors.New("these credentials hold no key for that server")

// deriveServerKey derives server's key from the bus's key.
func deriveServerKey(busKey []byte, server string) []byte {
	m := hmac.New(sha256.New, busKey)
	m.Write([]byte("skein/server/" + server))
	return m.Sum(nil)
}

// serverKey returns the key of server's commands and results.
func (k *Keys) serverKey(server string) (*serverKey, error) {
	if k == nil {
		return nil, ErrNoKey
	}
	if k.bus == nil {
		if k.own != nil && server == k.server {
			return k.own, nil
		}
		return nil, fmt.Errorf("%w: %s", ErrNoKey, server)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if sk, ok := k.derived[server]; ok {
		return sk, nil
	}
	if k.derived == nil {
		k.derived = map[string]*serverKey{}
	}
	sk := newServerKey(deriveServerKey(k.bus, server))
	k.derived[server] = sk
	return sk, nil
}

// Signs says whether these keys make and check MACs (every role's but the
// observer's, on a bus that asks for credentials).
func (k *Keys) Signs() bool { return k != nil && (k.bus != nil || k.own != nil) }

// mac is the base64 HMAC-SHA256 under sk of kind, subject, flags and body.
func (sk *serverKey) mac(kind, subject, flags string, body []byte) string {
	h := sk.macs.Get().(hash.Hash)
	h.Reset()
	// Each part's length first: no two (subject, body) pairs hash alike.
	var buf [256]byte
	b := append(buf[:0], kind...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(len(subject)), 10)
	b = append(b, ':')
	b = append(b, subject...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(len(flags)), 10)
	b = append(b, ':')
	b = append(b, flags...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, ':')
	h.Write(b)
	h.Write(body)
	var sum [sha256.Size]byte
	var out [43]byte // base64.RawURLEncoding of 32 bytes
	base64.RawURLEncoding.Encode(out[:], h.Sum(sum[:0]))
	sk.macs.Put(h)
	return string(out[:])
}

// CommandMAC is the code of a command for server on subject; fresh is its
// HeaderFreshID, covered so that a replay cannot claim it.
func (k *Keys) CommandMAC(server, subject string, fresh bool, body []byte) (string, error) {
	sk, err := k.serverKey(server)
	if err != nil {
		return "", err
	}
	return sk.mac("command", subject, freshFlag(fresh), body), nil
}

// ResultMAC is the code of server's result on subject.
func (k *Keys) ResultMAC(server, subject string, body []byte) (string, error) {
	sk, err := k.serverKey(server)
	if err != nil {
		return "", err
	}
	return sk.mac("result", subject, "", body), nil
}

// DedupID is the id JetStream deduplicates server's command id by: the
// same for every publication of the id (as the id itself was), foreseeable by
// nobody without the server's key.
func (k *Keys) DedupID(server, id string) (string, error) {
	sk, err := k.serverKey(server)
	if err != nil {
		return "", err
	}
	return "c-" + sk.mac("dedup", id, "", nil), nil
}

// VerifyCommand says whether got is the code of server's command.
func (k *Keys) VerifyCommand(server, subject string, fresh bool, body []byte, got string) bool {
	want, err := k.CommandMAC(server, subject, fresh, body)
	return err == nil && hmac.Equal([]byte(want), []byte(got))
}

// VerifyResult says whether got is the code of server's result.
func (k *Keys) VerifyResult(server, subject string, body []byte, got string) bool {
	want, err := k.ResultMAC(server, subject, body)
	return err == nil && hmac.Equal([]byte(want), []byte(got))
}

func freshFlag(fresh bool) string {
	if fresh {
		return "fresh"
	}
	return ""
}

// keysBlock frames the key in a creds file, after the JWT and the seed
// (which NATS's parsers take as the first and second blocks).
const (
	keysBegin = "-----BEGIN SKEIN KEY-----\n"
	keysEnd   = "\n------END SKEIN KEY------\n"
)

// formatKeys is the creds file's key block: "bus.<hex>" or "server.<name>.<hex>".
func formatKeys(line string) []byte {
	return []byte("\n" + keysBegin + line + keysEnd)
}

// ParseKeys reads the key block of a creds file; nil when it has none.
func ParseKeys(creds []byte) (*Keys, error) {
	_, rest, ok := bytes.Cut(creds, []byte(keysBegin))
	if !ok {
		return nil, nil
	}
	line, _, ok := bytes.Cut(rest, []byte("\n"))
	if !ok {
		return nil, errors.New("bus: the credentials' key block is cut short")
	}
	parts := strings.Split(strings.TrimSpace(string(line)), ".")
	switch {
	case len(parts) == 2 && parts[0] == "bus":
		key, err := hex.DecodeString(parts[1])
		if err != nil || len(key) != 32 {
			return nil, errors.New("bus: the credentials' bus key is not 32 bytes of hex")
		}
		return &Keys{bus: key}, nil
	case len(parts) == 3 && parts[0] == "server" && ValidToken(parts[1]):
		key, err := hex.DecodeString(parts[2])
		if err != nil || len(key) != 32 {
			return nil, errors.New("bus: the credentials' server key is not 32 bytes of hex")
		}
		return &Keys{server: parts[1], own: newServerKey(key)}, nil
	}
	return nil, errors.New("bus: the credentials' key block is unreadable")
}
