// Package seal keeps secrets (TLS private keys, passwords) sealed on their way
// to the one agent that needs them: each agent has a curve key pair (nkeys
// xkeys: X25519 with XSalsa20-Poly1305), publishes its public key in its
// heartbeat, and only it can open what is sealed to that key. The sender's key
// is made for each secret and thrown away, so nothing that travels the bus,
// sits in a stream, a record, an event or a log holds a secret in clear.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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

// dataMagic starts what NewSealer writes, so that it is never taken for
// plain data; it is every chunk's additional data too.
const dataMagic = "skein-sealed-2\n"

// ChunkSize is the plaintext of one sealed chunk: memory stays O(ChunkSize)
// whatever the size of what is sealed.
const ChunkSize = 64 << 10

// Errors of OpenStream, in words the commands show.
var (
	// ErrNotSealed is data that does not start as a Sealer's.
	ErrNotSealed = errors.New("not data sealed by skein")
	// ErrDamaged is a chunk that did not authenticate: changed, out of its
	// place, missing, or opened with another's key.
	ErrDamaged = errors.New("the sealed data is damaged or its key is another's")
)

// nonce writes the nonce of chunk number counter into dst: 11 bytes of
// big-endian counter and a last byte that is 1 on the final chunk only, as
// age's STREAM, so that chunks cannot be reordered, dropped, or the stream
// cut or extended unnoticed.
func nonce(dst []byte, counter uint64, final bool) {
	clear(dst)
	binary.BigEndian.PutUint64(dst[3:11], counter)
	if final {
		dst[11] = 1
	}
}

// Sealer seals what is written to it into its destination, a chunk at a
// time, under a key of its own (NewSealer); Close seals the final chunk.
type Sealer struct {
	dst     io.Writer
	aead    cipher.AEAD
	buf     []byte
	out     []byte
	nonce   []byte
	counter uint64
	err     error
}

// NewSealer returns a Sealer writing into dst and the new 256-bit key it
// seals under (AES-256-GCM); the key is then sealed To each reader. Nothing
// is written before the first chunk, so dst may be a pipe read later.
func NewSealer(dst io.Writer) (*Sealer, []byte, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, nil, err
	}
	aead, err := gcm(key)
	if err != nil {
		return nil, nil, err
	}
	s := &Sealer{dst: dst, aead: aead, buf: make([]byte, 0, ChunkSize), out: append(make([]byte, 0, len(dataMagic)+ChunkSize+aead.Overhead()), dataMagic...), nonce: make([]byte, aead.NonceSize())}
	return s, key, nil
}

// Write seals p as it fills chunks; a chunk is sealed once more follows it,
// as only the last one is final.
func (s *Sealer) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	n := 0
	for len(p) > 0 {
		if len(s.buf) == ChunkSize {
			if s.err = s.flush(false); s.err != nil {
				return n, s.err
			}
		}
		k := copy(s.buf[len(s.buf):ChunkSize], p)
		s.buf = s.buf[:len(s.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// Close seals the final chunk (empty only when nothing was written); dst is
// not closed.
func (s *Sealer) Close() error {
	if s.err != nil {
		return s.err
	}
	s.err = s.flush(true)
	if s.err == nil {
		s.err = errors.New("seal: the sealer is closed")
		return nil
	}
	return s.err
}

func (s *Sealer) flush(final bool) error {
	if s.counter == 1<<64-1 {
		return errors.New("seal: too much data for one key")
	}
	nonce(s.nonce, s.counter, final)
	// The first chunk goes out after the magic, already in s.out.
	s.out = s.aead.Seal(s.out, s.nonce, s.buf, []byte(dataMagic))
	s.counter++
	s.buf = s.buf[:0]
	_, err := s.dst.Write(s.out)
	s.out = s.out[:0]
	return err
}

// SealStream seals all src reads into dst under a new key and returns it.
func SealStream(dst io.Writer, src io.Reader) ([]byte, error) {
	s, key, err := NewSealer(dst)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(s, src); err != nil {
		return nil, err
	}
	if err := s.Close(); err != nil {
		return nil, err
	}
	return key, nil
}

// opener reads what a Sealer wrote and hands out a chunk's plaintext only
// once the chunk authenticated.
type opener struct {
	src     io.Reader
	key     []byte
	aead    cipher.AEAD
	buf     []byte
	plain   []byte
	nonce   []byte
	counter uint64
	// next1 is the first byte of the next chunk, read to know that the last
	// one was not final, when ahead.
	next1 byte
	ahead bool
	done  bool
	err   error
}

// OpenStream returns a reader of the plaintext of what a Sealer sealed under
// key and src reads. It never hands out a chunk that did not authenticate;
// a changed, reordered or dropped chunk, another's key, data past the end
// or an end cut short is an error, the last of them only where the stream
// ends: what was read is whole only once Read returned io.EOF.
func OpenStream(src io.Reader, key []byte) io.Reader {
	return &opener{src: src, key: key}
}

func (o *opener) Read(p []byte) (int, error) {
	for len(o.plain) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		o.err = o.next()
	}
	n := copy(p, o.plain)
	o.plain = o.plain[n:]
	return n, nil
}

// next opens the next chunk into o.plain, or says why it cannot: io.EOF
// after the final chunk.
func (o *opener) next() error {
	if o.done {
		return io.EOF
	}
	if o.aead == nil {
		if err := o.start(); err != nil {
			return err
		}
	}
	sealed := ChunkSize + o.aead.Overhead()
	o.buf = o.buf[:0]
	if o.ahead {
		o.buf = append(o.buf, o.next1)
	}
	// One byte past a chunk, when there is one, says that it is not the final one.
	n, err := io.ReadFull(o.src, o.buf[len(o.buf):sealed+1])
	o.buf = o.buf[:len(o.buf)+n]
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	final := len(o.buf) <= sealed
	if o.ahead = !final; o.ahead {
		o.next1 = o.buf[sealed]
	}
	chunk := o.buf[:min(len(o.buf), sealed)]
	// Only the stream of nothing ends with an empty final chunk.
	if len(chunk) < o.aead.Overhead() || final && len(chunk) == o.aead.Overhead() && o.counter > 0 || o.counter == 1<<64-1 {
		return ErrDamaged
	}
	nonce(o.nonce, o.counter, final)
	plain, err := o.aead.Open(chunk[:0], o.nonce, chunk, []byte(dataMagic))
	if err != nil {
		return ErrDamaged
	}
	o.counter++
	o.plain, o.done = plain, final
	if final && len(plain) == 0 {
		return io.EOF
	}
	return nil
}

// start checks the key and the magic.
func (o *opener) start() error {
	aead, err := gcm(o.key)
	if err != nil {
		return err
	}
	magic := make([]byte, len(dataMagic))
	if _, err := io.ReadFull(o.src, magic); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrNotSealed
		}
		return err
	}
	if string(magic) != dataMagic {
		return ErrNotSealed
	}
	o.aead, o.nonce = aead, make([]byte, aead.NonceSize())
	o.buf = make([]byte, 0, ChunkSize+aead.Overhead()+1)
	return nil
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
