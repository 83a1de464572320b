package bus

import (
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestTakeOnlyWhatTheStreamStored: a client takes from its stored-result
// subject only what the results stream republished there (a result it
// stored), for its own command and server. What others can have the server
// send there is not taken: a storage acknowledgement (any agent chooses its
// publication's reply subject), a push consumer's delivery, a direct get's
// answer of another stream's message carrying forged stream headers, the
// results stream's copy of another server's result; and a stored result that
// cannot be read is an error.
func TestTakeOnlyWhatTheStreamStored(t *testing.T) {
	result := `{"id":"result-c1","type":"result","v":1,"time":"2026-11-26T10:00:00Z","source":"agent/s1","server":"s1",` +
		`"data":{"command":"c1","command_type":"server.ping","ok":true,"output":{"server":"s1","time":"2026-11-26T10:00:00Z"}}}`
	// from the server: onto the headers stored with the message, the stream's own, as the server adds them
	from := func(subject, stream, source string, stored nats.Header, data string) *nats.Msg {
		m := nats.NewMsg(subject)
		for k, vs := range stored {
			for _, v := range vs {
				m.Header.Add(k, v)
			}
		}
		m.Header.Add(jetstream.StreamHeader, stream)
		m.Header.Add(jetstream.SubjectHeader, source)
		m.Header.Add(jetstream.SequenceHeader, "7")
		m.Data = []byte(data)
		return m
	}
	republished := from(StoredResultSubject("s1", "c1"), StreamResults, ResultSubject("s1", "c1"), nil, result)
	forgedHeaders := nats.Header{}
	forgedHeaders.Set(jetstream.StreamHeader, StreamResults)
	forgedHeaders.Set(jetstream.SubjectHeader, ResultSubject("s1", "c1"))
	forgedHeaders.Set(jetstream.SequenceHeader, "1")
	pushed := nats.NewMsg(StoredResultSubject("s1", "c1"))
	pushed.Header = forgedHeaders
	pushed.Reply = "$JS.ACK.KV_skein_lbs.forge.1.1.1.1.0"
	pushed.Data = []byte(result)

	mine := &resultWatch{server: "s1", id: "c1"}
	anyServer := &resultWatch{id: "c1"}
	for _, w := range []*resultWatch{mine, anyServer} {
		res, ok, err := w.take(republished)
		if !ok || err != nil || res == nil || res.Command != "c1" || !res.OK {
			t.Errorf("server %q: the stored result was not taken: %+v %v %v", w.server, res, ok, err)
		}
	}
	for _, c := range []struct {
		name string
		w    *resultWatch
		m    *nats.Msg
	}{
		{"another command's result", &resultWatch{server: "s1", id: "c2"}, republished},
		{"a storage acknowledgement", mine, &nats.Msg{Subject: StoredResultSubject("s1", "c1"), Data: []byte(`{"stream":"SKEIN_RESULTS","seq":8}`)}},
		{"a push consumer's delivery of forged headers", mine, pushed},
		{"a direct get of another stream's message with forged headers", mine,
			from(StoredResultSubject("s1", "c1"), StreamEvents, EventSubject("s2", "forge"), forgedHeaders, result)},
		{"another stream's republish", mine, from(StoredResultSubject("s1", "c1"), "OBJ_skein_backups_s2", "$O.skein_backups_s2.x", nil, result)},
		{"the results stream's copy of s2's result for s1's command", mine,
			from(StoredResultSubject("s1", "c1"), StreamResults, ResultSubject("s2", "c1"), nil, result)},
		{"s2's stored result, waiting for s1's", mine, from(StoredResultSubject("s2", "c1"), StreamResults, ResultSubject("s2", "c1"), nil, result)},
		{"s2's result stored with forged headers", anyServer,
			from(StoredResultSubject("s2", "c1"), StreamResults, ResultSubject("s2", "c1"), forgedHeaders, result)},
	} {
		if res, ok, _ := c.w.take(c.m); ok {
			t.Errorf("%s was taken: %+v", c.name, res)
		}
	}
	if res, ok, err := mine.take(from(StoredResultSubject("s1", "c1"), StreamResults, ResultSubject("s1", "c1"), nil, `{"id":"result-c1"`)); !ok || err == nil || res != nil {
		t.Errorf("an unreadable stored result: %+v %v %v, want its error", res, ok, err)
	}
}
