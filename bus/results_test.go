package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// TestStoredTakesOnlyTheAcknowledgedCopy: a client acts on the copy of a
// result whose storage JetStream acknowledged, looks in the stream when the
// stored copy is another (a duplicate) or was not seen, and acts on nothing
// JetStream refused.
func TestStoredTakesOnlyTheAcknowledgedCopy(t *testing.T) {
	w := &resultWatch{seen: map[string][]byte{}, acked: map[string]bool{}}
	copyOf := func(token, data string) *nats.Msg {
		m := nats.NewMsg(ResultSubject("s1", "c1"))
		m.Header.Set(HeaderResultToken, token)
		m.Data = []byte(data)
		return m
	}
	ack := func(token, data string) *nats.Msg {
		return &nats.Msg{Subject: StoredSubject("s1", "c1", token), Data: []byte(data)}
	}
	w.saw(copyOf("t1", "first"))
	w.saw(copyOf("t2", "second"))
	for _, c := range []struct {
		name, token, ack string
		raw              string
		lookup           bool
	}{
		{"stored copy seen", "t2", `{"stream":"SKEIN_RESULTS","seq":7}`, "second", false},
		{"the other copy seen", "t1", `{"stream":"SKEIN_RESULTS","seq":6}`, "first", false},
		{"an earlier copy is the stored one", "t2", `{"stream":"SKEIN_RESULTS","seq":6,"duplicate":true}`, "", true},
		{"stored but not seen (yet)", "t3", `{"stream":"SKEIN_RESULTS","seq":8}`, "", true},
		{"not stored", "t2", `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}`, "", false},
		{"another stream", "t2", `{"stream":"OTHER","seq":1}`, "", false},
		{"garbage", "t2", `nope`, "", false},
	} {
		raw, lookup := w.stored(ack(c.token, c.ack))
		if string(raw) != c.raw || lookup != c.lookup {
			t.Errorf("%s: took %q, lookup %v; want %q, %v", c.name, raw, lookup, c.raw, c.lookup)
		}
	}
	// The copy whose acknowledgement overtook it is taken when it comes; one
	// never acknowledged, or acknowledged as a duplicate, is not.
	if got := w.saw(copyOf("t3", "third")); string(got) != "third" {
		t.Errorf("the acknowledged copy t3 that came late was not taken: %q", got)
	}
	if got := w.saw(copyOf("t4", "fourth")); got != nil {
		t.Errorf("a copy never acknowledged was taken: %q", got)
	}
}
