// Package bus is skein's only knowledge of NATS: subject names, streams, KV
// buckets, the embedded server, connections and the command round trip.
package bus

import "strings"

// Prefix starts every skein subject.
const Prefix = "skein"

// CommandSubject addresses a command of type typ to one server's agent.
//
//	skein.cmd.<server>.<type>   e.g. skein.cmd.s1.container.launch
func CommandSubject(server, typ string) string {
	return Prefix + ".cmd." + server + "." + typ
}

// ServerCommands matches every command addressed to one server.
//
//	skein.cmd.<server>.>
func ServerCommands(server string) string { return Prefix + ".cmd." + server + ".>" }

// AllCommands matches every command.
//
//	skein.cmd.>
func AllCommands() string { return Prefix + ".cmd.>" }

// QuerySubject addresses a query of type typ to one server's agent: core NATS
// request/reply, nothing stored, for questions that make no sense once stale.
//
//	skein.query.<server>.<type>   e.g. skein.query.s1.server.ping
func QuerySubject(server, typ string) string {
	return Prefix + ".query." + server + "." + typ
}

// ServerQueries matches every query addressed to one server.
//
//	skein.query.<server>.>
func ServerQueries(server string) string { return Prefix + ".query." + server + ".>" }

// ResultSubject carries the result of command id, answered by server's agent:
// an agent may publish results for its own server only.
//
//	skein.result.<server>.<id>
func ResultSubject(server, id string) string { return Prefix + ".result." + server + "." + id }

// AnyResultSubject matches the result of command id, whatever its server.
//
//	skein.result.*.<id>
func AnyResultSubject(id string) string { return Prefix + ".result.*." + id }

// ServerResults matches every result of one server.
//
//	skein.result.<server>.>
func ServerResults(server string) string { return Prefix + ".result." + server + ".>" }

// StoredSubject is the reply subject of one publication of command id's
// result: JetStream acknowledges there that the results stream stored it, and
// the agent waits for that before acknowledging the command. token names the
// publication (also in the result's HeaderResultToken), so that one
// subscription of the agent's serves all its results.
//
//	skein.stored.<server>.<id>.<token>
func StoredSubject(server, id, token string) string {
	return Prefix + ".stored." + server + "." + id + "." + token
}

// ServerStoredAcks matches the storage acknowledgements of one server's
// results, and not the stored results themselves (StoredResultSubject).
//
//	skein.stored.<server>.*.*
func ServerStoredAcks(server string) string { return Prefix + ".stored." + server + ".*.*" }

// StoredResultSubject carries the result of command id once the results
// stream has stored it: the stream republishes it there (StreamConfigs), and
// waiting clients listen there only. Clients act only on a result that
// survives its agent (a result seen live and then lost with its agent let the
// command run again after the client had moved on: found by the chaos soak).
// Nobody's credentials may publish here; what else the server can be made to
// send here (a reply, a push consumer's delivery) clients tell apart.
//
//	skein.stored.<server>.<id>
func StoredResultSubject(server, id string) string { return Prefix + ".stored." + server + "." + id }

// AnyStoredResult matches the stored result of command id, whatever its server.
//
//	skein.stored.*.<id>
func AnyStoredResult(id string) string { return Prefix + ".stored.*." + id }

// ServerStored matches one server's stored results and their storage acknowledgements.
//
//	skein.stored.<server>.>
func ServerStored(server string) string { return Prefix + ".stored." + server + ".>" }

// AllResults matches every result.
//
//	skein.result.>
func AllResults() string { return Prefix + ".result.>" }

// ProgressSubject carries progress reports of command id from server's agent;
// core NATS, not stored.
//
//	skein.progress.<server>.<id>
func ProgressSubject(server, id string) string { return Prefix + ".progress." + server + "." + id }

// ServerProgress matches every progress report of one server.
//
//	skein.progress.<server>.>
func ServerProgress(server string) string { return Prefix + ".progress." + server + ".>" }

// EventSubject carries events of type typ about server.
//
//	skein.event.<server>.<type>   e.g. skein.event.s1.container.started
func EventSubject(server, typ string) string { return Prefix + ".event." + server + "." + typ }

// EventFilter matches events of type typ (which may end in ".*" or be "" for all)
// about server ("" for any).
//
//	skein.event.<server|*>.<type|>>
func EventFilter(server, typ string) string {
	if server == "" {
		server = "*"
	}
	if typ == "" || typ == "*" {
		return Prefix + ".event." + server + ".>"
	}
	return Prefix + ".event." + server + "." + typ
}

// AllEvents matches every event.
//
//	skein.event.>
func AllEvents() string { return Prefix + ".event.>" }

// CommandsElected is where JetStream tells that server's command consumer
// has a new leader (its NATS node lost, or a leader handing over): the
// agent asks the new one for commands at once.
func CommandsElected(server string) string {
	return "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED." + StreamCommands + "." + AgentConsumerName(server)
}

// ValidToken reports whether s can stand as one subject token (a server name, a command id).
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	return !strings.ContainsAny(s, ".*> \t\r\n")
}
