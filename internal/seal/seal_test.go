package seal

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

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

// Sealed data opens with its key only, holds nothing of the plain data, and
// fails when a byte of it changed.
func TestSealedDataOpensWithItsKeyOnly(t *testing.T) {
	plain := []byte(strings.Repeat("INSERT INTO w VALUES (1, 'row-marker');\n", 200))
	box, key, err := SealData(plain)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(box), "row-marker") || len(key) != 32 {
		t.Fatalf("the box holds the plain data, or the key is %d bytes", len(key))
	}
	got, err := OpenData(box, key)
	if err != nil || string(got) != string(plain) {
		t.Fatalf("open: %v", err)
	}
	_, other, _ := SealData(plain)
	if _, err := OpenData(box, other); err == nil {
		t.Error("another key opened it")
	}
	box[len(box)/2] ^= 1
	if _, err := OpenData(box, key); err == nil {
		t.Error("a changed byte went unnoticed")
	}
	if _, err := OpenData(plain, key); err == nil || !strings.Contains(err.Error(), "not data sealed by skein") {
		t.Errorf("plain data: %v", err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "none.xk")); err == nil {
		t.Error("Load made a key")
	}
}
