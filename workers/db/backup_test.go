package db

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/skeinhq/skein/internal/seal"
)

// A backup is sealed to its server's agent and the admin: each opens it, and
// another agent or anyone reading the store gets neither the dump nor its key;
// the admin reseals it to another agent without touching the data.
func TestBackupOpensForItsAgentAndTheAdminOnly(t *testing.T) {
	var dump bytes.Buffer
	zw := gzip.NewWriter(&dump)
	zw.Write([]byte(strings.Repeat("INSERT INTO t VALUES (42, 'secret-row');\n", 100)))
	zw.Close()
	plain := dump.Bytes()
	agent, _ := seal.New()
	admin, _ := seal.New()
	other, _ := seal.New()
	sum := sha256.Sum256(plain)
	meta := map[string]string{metaSHA256: hex.EncodeToString(sum[:])}
	box, err := SealBackup(plain, agent.Public(), admin.Public(), meta)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(box, plain[:16]) || bytes.HasPrefix(box, []byte{0x1f, 0x8b}) {
		t.Fatal("the stored backup holds the dump")
	}
	if _, err := gzip.NewReader(bytes.NewReader(box)); err == nil {
		t.Error("the stored backup reads as gzip")
	}
	for _, r := range []struct {
		k      Keyring
		reader string
	}{{agent, MetaKeyAgent}, {admin, MetaKeyAdmin}} {
		got, err := OpenBackup(box, meta, r.k, r.reader)
		if err != nil || !bytes.Equal(got, plain) {
			t.Errorf("%s: %v", r.reader, err)
		}
	}
	if _, err := OpenBackup(box, meta, other, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "not sealed to this server's agent") {
		t.Errorf("another agent: %v", err)
	}
	if _, err := OpenBackup(box, meta, other, MetaKeyAdmin); err == nil || !strings.Contains(err.Error(), admin.Public()) {
		t.Errorf("another admin key: %v, want the key it is sealed to named", err)
	}
	moved, err := ResealBackup(meta, admin, other.Public())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := OpenBackup(box, moved, other, MetaKeyAgent); err != nil || !bytes.Equal(got, plain) {
		t.Errorf("resealed to another agent: %v", err)
	}
	if _, err := ResealBackup(meta, other, agent.Public()); err == nil {
		t.Error("a key that is not the admin's resealed it")
	}
	meta[metaSHA256] = strings.Repeat("0", 64)
	if _, err := OpenBackup(box, meta, agent, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a wrong checksum: %v", err)
	}
	if _, err := OpenBackup(box, map[string]string{}, agent, MetaKeyAgent); err == nil || !strings.Contains(err.Error(), "no key") {
		t.Errorf("a backup with no key: %v", err)
	}
}
