package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTakeOnlyWhatTheStreamStored: a client takes from its stored-result
// subject only what the results stream republished there (a result it
// stored), for its own command; a storage acknowledgement sent there (any
// agent can have JetStream answer on a subject of its choosing) or another
// command's result is not taken, and a stored result that cannot be read is
// an error.
func TestTakeOnlyWhatTheStreamStored(t *testing.T) {
	result := `{"id":"result-c1","type":"result","v":1,"time":"2026-11-26T10:00:00Z","source":"agent/s1","server":"s1",` +
		`"data":{"command":"c1","command_type":"server.ping","ok":true,"output":{"server":"s1","time":"2026-11-26T10:00:00Z"}}}`
	republished := func(data string) *nats.Msg {
		m := nats.NewMsg(StoredResultSubject("s1", "c1"))
		m.Header.Set(jetstream.StreamHeader, StreamResults)
		m.Header.Set(jetstream.SubjectHeader, ResultSubject("s1", "c1"))
		m.Header.Set(jetstream.SequenceHeader, "7")
		m.Data = []byte(data)
		return m
	}
	res, ok, err := take(republished(result), "c1")
	if !ok || err != nil || res == nil || res.Command != "c1" || !res.OK {
		t.Errorf("the stored result was not taken: %+v %v %v", res, ok, err)
	}
	if _, ok, _ := take(republished(result), "c2"); ok {
		t.Error("another command's result was taken")
	}
	ack := &nats.Msg{Subject: StoredResultSubject("s1", "c1"), Data: []byte(`{"stream":"SKEIN_RESULTS","seq":8}`)}
	if _, ok, _ := take(ack, "c1"); ok {
		t.Error("a storage acknowledgement was taken as the result")
	}
	forged := nats.NewMsg(StoredResultSubject("s1", "c1"))
	forged.Header.Set(jetstream.StreamHeader, "OTHER")
	forged.Header.Set(jetstream.SubjectHeader, ResultSubject("s1", "c1"))
	forged.Data = []byte(result)
	if _, ok, _ := take(forged, "c1"); ok {
		t.Error("a message from another stream was taken")
	}
	if res, ok, err := take(republished(`{"id":"result-c1"`), "c1"); !ok || err == nil || res != nil {
		t.Errorf("an unreadable stored result: %+v %v %v, want its error", res, ok, err)
	}
}
