package seal

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/skeinhq/skein/events"
)

func TestSealedOpensOnlyForItsRecipient(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent", "seal.key")
	agent, err := LoadOrCreate(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v %v, want mode 0600", fi, err)
	}
	again, err := LoadOrCreate(path)
	if err != nil || again.Public() != agent.Public() {
		t.Fatalf("reloaded key %v differs: %s vs %s", err, again.Public(), agent.Public())
	}
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI...\n")
	box, err := To(agent.Public(), secret)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(box.Box, "BEGIN") || strings.Contains(box.Box, "MHcCAQEEI") {
		t.Fatal("the box shows the secret")
	}
	got, err := agent.Open(box)
	if err != nil || string(got) != string(secret) {
		t.Fatalf("Open = %q %v", got, err)
	}
	other, _ := New()
	if _, err := other.Open(box); err == nil || !strings.Contains(err.Error(), "sealed for another key") {
		t.Errorf("another key opened it: %v", err)
	}
	tampered := box
	tampered.Box = box.Box[:len(box.Box)-4] + "AAAA"
	if _, err := agent.Open(tampered); err == nil {
		t.Error("a tampered box opened")
	}
	if _, err := agent.Open(events.Sealed{}); err == nil || !strings.Contains(err.Error(), "nothing sealed") {
		t.Errorf("an empty box: %v", err)
	}
	if _, err := To("not-a-key", secret); err == nil {
		t.Error("sealed to a non-key")
	}
}

// sealed seals plain by writes of odd sizes and returns the stream and key.
func sealed(t *testing.T, plain []byte) ([]byte, []byte) {
	t.Helper()
	var box bytes.Buffer
	s, key, err := NewSealer(&box)
	if err != nil {
		t.Fatal(err)
	}
	if box.Len() != 0 {
		t.Fatal("NewSealer wrote before the first chunk: a pipe read later would block it")
	}
	for rest := plain; len(rest) > 0; {
		n := min(len(rest), 1+len(rest)%70001)
		if _, err := s.Write(rest[:n]); err != nil {
			t.Fatal(err)
		}
		rest = rest[n:]
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return box.Bytes(), key
}

// open reads what OpenStream hands out, by short reads, until it fails.
func open(box, key []byte) ([]byte, error) {
	return io.ReadAll(iotest.HalfReader(OpenStream(iotest.HalfReader(bytes.NewReader(box)), key)))
}

// Sealed data of any size, chunks exactly full or not, comes back as it was
// under its key, and its stream holds nothing of it.
func TestSealedStreamRoundTrips(t *testing.T) {
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize, 5<<20 + 17} {
		plain := make([]byte, size)
		for i := range plain {
			plain[i] = byte(i % 251)
		}
		box, key := sealed(t, plain)
		if len(key) != 32 {
			t.Fatalf("a key of %d bytes", len(key))
		}
		if size >= 64 && bytes.Contains(box, plain[size/2:size/2+32]) {
			t.Fatalf("%d bytes: the stream holds the plain data", size)
		}
		got, err := open(box, key)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: %d bytes back, %v", size, len(got), err)
		}
		var viaCopy bytes.Buffer
		k2, err := SealStream(&viaCopy, bytes.NewReader(plain))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := open(viaCopy.Bytes(), k2); err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("SealStream of %d bytes: %d bytes back, %v", size, len(got), err)
		}
	}
}

// Every change to a sealed stream fails it: a changed byte, chunks
// reordered, dropped, the final one missing, the stream cut or extended,
// another backup's key. No plaintext of a chunk that did not authenticate
// is handed out.
func TestSealedStreamRefusesTampering(t *testing.T) {
	plain := make([]byte, 3*ChunkSize+100)
	for i := range plain {
		plain[i] = byte(i % 253)
	}
	box, key := sealed(t, plain)
	m, c := len(dataMagic), ChunkSize+16
	chunk := func(i int) []byte { return box[m+i*c : min(len(box), m+(i+1)*c)] }
	join := func(parts ...[]byte) []byte { return bytes.Join(append([][]byte{[]byte(dataMagic)}, parts...), nil) }
	changed := bytes.Clone(box)
	changed[m+c+c/2] ^= 1
	_, otherKey := sealed(t, plain)
	for _, tc := range []struct {
		name string
		box  []byte
		key  []byte
		// good is how much plaintext may be handed out before the error.
		good int
	}{
		{"a changed byte", changed, key, ChunkSize},
		{"chunks reordered", join(chunk(1), chunk(0), chunk(2), chunk(3)), key, 0},
		{"a chunk dropped", join(chunk(0), chunk(2), chunk(3)), key, ChunkSize},
		{"the final chunk missing", join(chunk(0), chunk(1), chunk(2)), key, 2 * ChunkSize},
		{"cut inside the final chunk", box[:len(box)-1], key, 3 * ChunkSize},
		{"extended by a byte", append(bytes.Clone(box), 0), key, 3 * ChunkSize},
		{"extended by a chunk", join(chunk(0), chunk(1), chunk(2), chunk(3), chunk(3)), key, 3 * ChunkSize},
		{"extended by an empty final chunk", append(bytes.Clone(box), make([]byte, 16)...), key, 3 * ChunkSize},
		{"the magic only", []byte(dataMagic), key, 0},
		{"another backup's key", box, otherKey, 0},
	} {
		got, err := open(tc.box, tc.key)
		if err == nil || err.Error() != "the sealed data is damaged or its key is another's" {
			t.Errorf("%s: %v, want it damaged", tc.name, err)
		}
		if len(got) > tc.good || !bytes.Equal(got, plain[:len(got)]) {
			t.Errorf("%s: %d bytes handed out, at most %d of the plain data", tc.name, len(got), tc.good)
		}
	}
	for _, notSealed := range [][]byte{nil, plain, []byte("skein-sealed-1\n" + string(box[m:]))} {
		if _, err := open(notSealed, key); err == nil || err.Error() != "not data sealed by skein" {
			t.Errorf("%.16q: %v", notSealed, err)
		}
	}
	if _, err := open(box, key[:16]); err == nil {
		t.Error("a short key opened it")
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.xk")); err == nil {
		t.Error("Load made a key")
	}
}
