package bus

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestSubjects(t *testing.T) {
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"command", CommandSubject("s1", "container.launch"), "skein.cmd.s1.container.launch"},
		{"ping command", CommandSubject("edge-2", "server.ping"), "skein.cmd.edge-2.server.ping"},
		{"server commands", ServerCommands("s1"), "skein.cmd.s1.>"},
		{"all commands", AllCommands(), "skein.cmd.>"},
		{"result", ResultSubject("s1", "abc123"), "skein.result.s1.abc123"},
		{"any result", AnyResultSubject("abc123"), "skein.result.*.abc123"},
		{"all results", AllResults(), "skein.result.>"},
		{"stored result", StoredResultSubject("s1", "abc123"), "skein.stored.s1.abc123"},
		{"any stored result", AnyStoredResult("abc123"), "skein.stored.*.abc123"},
		{"storage acknowledgement", StoredSubject("s1", "abc123", "t1"), "skein.stored.s1.abc123.t1"},
		{"server's storage acknowledgements", ServerStoredAcks("s1"), "skein.stored.s1.*.*"},
		{"server's stored", ServerStored("s1"), "skein.stored.s1.>"},
		{"progress", ProgressSubject("s1", "abc123"), "skein.progress.s1.abc123"},
		{"event", EventSubject("s1", "container.started"), "skein.event.s1.container.started"},
		{"all events", AllEvents(), "skein.event.>"},
		{"event filter: one server, every type", EventFilter("s1", ""), "skein.event.s1.>"},
		{"event filter: star type means every type", EventFilter("s1", "*"), "skein.event.s1.>"},
		{"event filter: one server, container events", EventFilter("s1", "container.*"), "skein.event.s1.container.*"},
		{"event filter: any server, container events", EventFilter("", "container.*"), "skein.event.*.container.*"},
		{"event filter: any server, one type", EventFilter("", "container.stopped"), "skein.event.*.container.stopped"},
		{"event filter: everything", EventFilter("", ""), "skein.event.*.>"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

// TestEventFilterMatches checks the filters against real subjects with the
// server's own matcher, so a filter that reads right but matches wrong fails.
func TestEventFilterMatches(t *testing.T) {
	tests := []struct {
		server, typ string
		subject     string
		match       bool
	}{
		{"", "", EventSubject("s1", "container.started"), true},
		{"", "", EventSubject("s2", "server.up"), true},
		{"s1", "", EventSubject("s1", "server.up"), true},
		{"s1", "", EventSubject("s2", "server.up"), false},
		{"", "container.*", EventSubject("s2", "container.stopped"), true},
		{"", "container.*", EventSubject("s2", "server.up"), false},
		{"s1", "container.*", EventSubject("s2", "container.stopped"), false},
		{"s1", "container.stopped", EventSubject("s1", "container.started"), false},
		{"", "", CommandSubject("s1", "container.launch"), false},
	}
	for _, tc := range tests {
		f := EventFilter(tc.server, tc.typ)
		if got := server.SubjectMatchesFilter(tc.subject, f); got != tc.match {
			t.Errorf("EventFilter(%q, %q) = %q matches %q: %v, want %v", tc.server, tc.typ, f, tc.subject, got, tc.match)
		}
	}
	// A server's command filter must catch its commands and only its.
	if !server.SubjectMatchesFilter(CommandSubject("s1", "container.launch"), ServerCommands("s1")) {
		t.Error("ServerCommands(s1) misses a launch for s1")
	}
	if server.SubjectMatchesFilter(CommandSubject("s10", "container.launch"), ServerCommands("s1")) {
		t.Error("ServerCommands(s1) catches a launch for s10")
	}
}

// TestStoredSubjectsKeepApart: a client waiting for a stored result hears no
// storage acknowledgement, an agent waiting for acknowledgements hears no
// stored result, and both fit in the server's permission.
func TestStoredSubjectsKeepApart(t *testing.T) {
	result, ack := StoredResultSubject("s1", "c1"), StoredSubject("s1", "c1", "t1")
	for _, tc := range []struct {
		subject, filter string
		match           bool
	}{
		{result, StoredResultSubject("s1", "c1"), true},
		{result, AnyStoredResult("c1"), true},
		{ack, StoredResultSubject("s1", "c1"), false},
		{ack, AnyStoredResult("c1"), false},
		{ack, ServerStoredAcks("s1"), true},
		{result, ServerStoredAcks("s1"), false},
		{ack, ServerStoredAcks("s10"), false},
		{result, ServerStored("s1"), true},
		{ack, ServerStored("s1"), true},
		{StoredResultSubject("s10", "c1"), ServerStored("s1"), false},
	} {
		if got := server.SubjectMatchesFilter(tc.subject, tc.filter); got != tc.match {
			t.Errorf("%q matches %q: %v, want %v", tc.subject, tc.filter, got, tc.match)
		}
	}
}

func TestValidToken(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"s1", true},
		{"edge-02_b", true},
		{"0f3a9c", true},
		{"", false},
		{"a.b", false},
		{"*", false},
		{"a*", false},
		{">", false},
		{"a>", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\r", false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			if got := ValidToken(tc.in); got != tc.want {
				t.Errorf("ValidToken(%q) = %v, want %v", tc.in, got, tc.want)
			}
		})
	}
}
