package bus

import (
	"bytes"
	"testing"
)

// BenchmarkCommandMAC is the cost of one command's MAC (made by the client,
// checked again by the agent): a result's is the same work.
func BenchmarkCommandMAC(b *testing.B) {
	k := &Keys{bus: bytes.Repeat([]byte{7}, 32)}
	body := bytes.Repeat([]byte("x"), 360)
	subject := CommandSubject("s1", "server.ping")
	for b.Loop() {
		if _, err := k.CommandMAC("s1", subject, true, body); err != nil {
			b.Fatal(err)
		}
	}
}
