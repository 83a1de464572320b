package events

import "testing"

// BenchmarkDecode is the envelope decode (and payload check) every message
// on the bus goes through twice in a round trip: a command and its result.
func BenchmarkDecode(b *testing.B) {
	env, err := New(TypePing, "cli", "s1", Ping{})
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := env.Marshal()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(raw); err != nil {
			b.Fatal(err)
		}
	}
}
