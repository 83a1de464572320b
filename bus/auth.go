package bus

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"golang.org/x/sys/unix"
)

// Account names on the bus.
const (
	// AccountName is the account every skein component uses.
	AccountName = "SKEIN"
	// SystemAccountName is the NATS system account.
	SystemAccountName = "SYS"
)

// SchedulerName is the job scheduler's name on the bus: its commands are
// skein.cmd._scheduler.* (no server's name starts with '_').
const SchedulerName = "_scheduler"

// Role is what one set of credentials may do.
type Role struct {
	// Kind is admin (everything: the CLI), agent (one server's share),
	// scheduler (its own commands, the jobs, and the agents' commands) or
	// observer (read events and state, publish nothing).
	Kind string
	// Server is the agent's server.
	Server string
}

// Name is the role's user name, e.g. "agent-s1"; it also makes the role's
// inbox prefix, so that no role reads another's replies.
func (r Role) Name() string {
	if r.Kind == "agent" {
		return "agent-" + r.Server
	}
	return r.Kind
}

// InboxPrefix is where the role's replies go: a subject only it may read.
// Admins keep the default.
func (r Role) InboxPrefix() string {
	if r.Kind == "admin" {
		return ""
	}
	return "_INBOX." + r.Name()
}

// ParseRole reads "admin", "observer" or "agent NAME".
func ParseRole(kind, server string) (Role, error) {
	switch kind {
	case "admin", "observer", "scheduler":
		if server != "" {
			return Role{}, fmt.Errorf("%s credentials are for no server: leave out %q", kind, server)
		}
		return Role{Kind: kind}, nil
	case "agent":
		if !ValidToken(server) {
			return Role{}, fmt.Errorf("agent credentials need the server's name: skein creds agent NAME")
		}
		if reservedServerNames[server] {
			return Role{}, fmt.Errorf("%q cannot name a server: keys of the jobs and the scheduler's lease start with it, which its agent could then write; choose another name", server)
		}
		return Role{Kind: kind, Server: server}, nil
	}
	return Role{}, fmt.Errorf("unknown role %q: use agent NAME, admin, scheduler or observer", kind)
}

// Permissions are what the role may publish and subscribe to. Each is a
// subject prefix: an agent's own commands, results, progress, events and
// records all carry its server's name.
func (r Role) Permissions() jwt.Permissions {
	var p jwt.Permissions
	switch r.Kind {
	case "agent":
		s, c := r.Server, AgentConsumerName(r.Server)
		// Never the jobs or the scheduler's lease, whatever its name.
		p.Pub.Deny.Add("$KV.skein_jobs.>", "$KV.skein_leader.>")
		p.Pub.Deny.Add(commandReads()...)
		p.Pub.Allow.Add(
			ServerResults(s), ServerProgress(s), EventFilter(s, ""),
			"$KV."+heartbeatBucket+"."+s, "$KV.*."+s+".>",
			"$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>",
			"$JS.FC.>",
		)
		// Its command consumer, which the bus's server makes (ProvisionRoles):
		// a consumer's filter is its config, so who may make one may take
		// another server's commands.
		p.Pub.Allow.Add(commandConsumer(c)...)
		p.Pub.Allow.Add(readConsumers()...)
		// Its own server's backups, in the object store the bus's server
		// makes: written and read, never reconfigured (a stream's subjects
		// are its config: whoever may set them may store every reply).
		p.Pub.Allow.Add("$O."+BackupsBucket(s)+".>", "$JS.API.CONSUMER.*.OBJ_"+BackupsBucket(s)+".>")
		// JetStream's acknowledgements of its results (bus.StoredSubject).
		p.Sub.Allow.Add(ServerQueries(s), ServerStored(s), r.InboxPrefix()+".>", CommandsElected(s))
		// Answers to the queries it is sent, and to those only.
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	case "scheduler":
		// Its own commands, results, progress, events and journal as the
		// agents have theirs; the jobs and the lease; commands and queries to
		// every agent, and their results. Nothing of the bus's accounts.
		s, c := SchedulerName, AgentConsumerName(SchedulerName)
		p.Pub.Allow.Add(
			ServerResults(s), ServerProgress(s), EventFilter(s, ""), "$KV.*."+s+".>",
			"$KV.skein_jobs.job.>", "$KV.skein_leader.scheduler.>",
			Prefix+".cmd.*.>", Prefix+".query.*.>",
			"$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>",
			"$JS.API.CONSUMER.*."+StreamResults+".>", "$JS.API.CONSUMER.*."+StreamEvents+".>",
			"$JS.FC.>",
		)
		p.Pub.Allow.Add(commandConsumer(c)...)
		p.Pub.Allow.Add(readConsumers()...)
		p.Sub.Allow.Add(ServerQueries(s), r.InboxPrefix()+".>", Prefix+".result.>", Prefix+".stored.>", Prefix+".progress.>", CommandsElected(s))
		p.Resp = &jwt.ResponsePermission{MaxMsgs: 1, Expires: time.Minute}
	case "observer":
		p.Pub.Deny.Add(commandReads()...)
		p.Pub.Allow.Add(
			"$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST",
			"$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>",
			"$JS.API.CONSUMER.CREATE."+StreamEvents+".>", "$JS.API.CONSUMER.DELETE."+StreamEvents+".>", "$JS.FC.>",
		)
		p.Pub.Allow.Add(readConsumers()...)
		p.Sub.Allow.Add(AllEvents(), r.InboxPrefix()+".>")
	}
	return p
}

// commandReads are the JetStream API subjects of reading any message of the
// commands stream. Agents and the observer are denied them: another
// server's queued commands would tell them ids to have messages stored
// under before its agent answers (the result's subject then full).
func commandReads() []string {
	return []string{
		"$JS.API.DIRECT.GET." + StreamCommands, "$JS.API.DIRECT.GET." + StreamCommands + ".>",
		"$JS.API.STREAM.MSG.GET." + StreamCommands,
	}
}

// commandConsumer are the JetStream API subjects of consuming the durable
// consumer c of the commands stream, made by the bus's server: its info,
// its next messages and their acknowledgements; not making or changing it.
func commandConsumer(c string) []string {
	return []string{
		"$JS.API.CONSUMER.INFO." + StreamCommands + "." + c,
		"$JS.API.CONSUMER.MSG.NEXT." + StreamCommands + "." + c,
		"$JS.ACK." + StreamCommands + "." + c + ".>",
	}
}

// readConsumers are the JetStream API subjects of watching and listing the KV
// buckets and reading the images object store (ephemeral consumers that only
// read); one stream each, since a wildcard is a whole subject token.
func readConsumers() []string {
	var out []string
	streams := []string{"OBJ_" + ImagesBucket}
	for _, b := range BucketConfigs(1) {
		streams = append(streams, "KV_"+b.Bucket)
	}
	for _, s := range streams {
		// CREATE, DELETE and INFO (and PAUSE) of a consumer of s, in one entry: a
		// JWT travels in one control line, which NATS bounds at 4 KiB.
		out = append(out, "$JS.API.CONSUMER.*."+s+".>")
	}
	return out
}

// reservedServerNames start keys that are no server's (bus.Key("job", NAME),
// the scheduler's lease): an agent writes the keys its server's name starts.
var reservedServerNames = map[string]bool{"job": true, "scheduler": true}

// heartbeatBucket is the bucket of heartbeats, keyed by server name alone.
const heartbeatBucket = "skein_servers"

// Authority holds skein's keys on the bus, under DIR: the operator that the
// server trusts, the SKEIN account every component uses, the system account,
// and the users issued and revoked. Only the machine of `skein server` has it.
type Authority struct {
	dir                       string
	operator, account, system nkeys.KeyPair
	// busKey is what every server's command key derives from (Keys).
	busKey []byte

	mu     sync.Mutex
	ledger ledger
	// changed is told when this process issues or revokes credentials, so
	// that the server following the authority acts at once (FollowAuthority).
	changed chan struct{}
}

// ledger is what was issued and revoked, kept in DIR/users.json.
type ledger struct {
	// Issued are the users' public keys by role name.
	Issued map[string][]string `json:"issued"`
	// Revoked are users' public keys with the time they were revoked (unix seconds).
	Revoked map[string]int64 `json:"revoked"`
	// Made are the durable consumers roles other than the admin made
	// ("STREAM/NAME"), by their maker's public key: deleted when it is revoked.
	Made map[string]string `json:"made,omitempty"`
}

// LoadAuthority reads the keys under dir, making them (0600 files in a 0700
// directory) on first use.
func LoadAuthority(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	a := &Authority{dir: dir, ledger: ledger{Issued: map[string][]string{}, Revoked: map[string]int64{}, Made: map[string]string{}}, changed: make(chan struct{}, 1)}
	var err error
	if a.operator, err = loadKey(filepath.Join(dir, "operator.nk"), nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.account, err = loadKey(filepath.Join(dir, "account.nk"), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.system, err = loadKey(filepath.Join(dir, "system.nk"), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.busKey, err = loadBusKey(filepath.Join(dir, "bus.key")); err != nil {
		return nil, err
	}
	if err := a.readLedger(); err != nil {
		return nil, err
	}
	return a, nil
}

// loadBusKey reads the bus's key (32 bytes, hex), making it on first use.
func loadBusKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(key)), 0o600); err != nil {
			return nil, fmt.Errorf("bus: %w", err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("bus: %s is not 32 bytes of hex: restore it from a backup, or remove DATA/auth and issue every credential again", path)
	}
	return key, nil
}

// keysLine is the key block of r's credentials: the bus's key for the admin
// and the scheduler (who command every server), the server's own for an
// agent, none for the observer.
func (a *Authority) keysLine(r Role) string {
	switch r.Kind {
	case "admin", "scheduler":
		return "bus." + hex.EncodeToString(a.busKey)
	case "agent":
		return "server." + r.Server + "." + hex.EncodeToString(deriveServerKey(a.busKey, r.Server))
	}
	return ""
}

func loadKey(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	seed, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		kp, err := create()
		if err != nil {
			return nil, err
		}
		if seed, err = kp.Seed(); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, seed, 0o600); err != nil {
			return nil, fmt.Errorf("bus: %w", err)
		}
		return kp, nil
	}
	if err != nil {
		return nil, fmt.Errorf("bus: %w", err)
	}
	kp, err := nkeys.FromSeed(seed)
	if err != nil {
		return nil, fmt.Errorf("bus: %s: %w", path, err)
	}
	return kp, nil
}

func (a *Authority) ledgerPath() string { return filepath.Join(a.dir, "users.json") }

func (a *Authority) readLedger() error {
	b, err := os.ReadFile(a.ledgerPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	var l ledger
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("bus: %s: %w", a.ledgerPath(), err)
	}
	if l.Issued == nil {
		l.Issued = map[string][]string{}
	}
	if l.Revoked == nil {
		l.Revoked = map[string]int64{}
	}
	if l.Made == nil {
		l.Made = map[string]string{}
	}
	a.ledger = l
	return nil
}

// changeLedger applies change to the ledger as it is on disk, under a lock
// every process of this authority takes: `skein creds` run beside a
// running server, and the server's own issuing, revoking and recording,
// never lose each other's changes (a server that wrote its copy read at
// start dropped credentials issued since, and their consumers were never
// made). Called with a.mu held.
func (a *Authority) changeLedger(change func(l *ledger)) error {
	f, err := os.OpenFile(a.ledgerPath()+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("bus: locking the ledger: %w", err)
	}
	defer func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN) }()
	if err := a.readLedger(); err != nil {
		return err
	}
	change(&a.ledger)
	return a.writeLedger()
}

func (a *Authority) writeLedger() error {
	b, err := json.MarshalIndent(a.ledger, "", "  ")
	if err != nil {
		return err
	}
	tmp := a.ledgerPath() + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("bus: %w", err)
	}
	return os.Rename(tmp, a.ledgerPath())
}

func pub(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

// operatorClaims are the claims of skein's operator.
func (a *Authority) operatorClaims() (*jwt.OperatorClaims, error) {
	oc := jwt.NewOperatorClaims(pub(a.operator))
	oc.Name = "skein"
	oc.SystemAccount = pub(a.system)
	token, err := oc.Encode(a.operator)
	if err != nil {
		return nil, err
	}
	return jwt.DecodeOperatorClaims(token)
}

// accountJWT is the SKEIN account's JWT: JetStream on, the users revoked.
func (a *Authority) accountJWT() (string, error) {
	ac := jwt.NewAccountClaims(pub(a.account))
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	a.mu.Lock()
	for user, at := range a.ledger.Revoked {
		ac.Revoke(user) // revokes every JWT of the user issued up to now
		ac.Revocations[user] = at
	}
	a.mu.Unlock()
	return ac.Encode(a.operator)
}

func (a *Authority) systemJWT() (string, error) {
	sc := jwt.NewAccountClaims(pub(a.system))
	sc.Name = SystemAccountName
	return sc.Encode(a.operator)
}

// Configure makes server options trust the authority: every client must then
// present credentials it issued, and is held to their permissions.
func (a *Authority) Configure(opts *server.Options) error {
	oc, err := a.operatorClaims()
	if err != nil {
		return err
	}
	accJWT, err := a.accountJWT()
	if err != nil {
		return err
	}
	sysJWT, err := a.systemJWT()
	if err != nil {
		return err
	}
	resolver := &server.MemAccResolver{}
	if err := resolver.Store(pub(a.account), accJWT); err != nil {
		return err
	}
	if err := resolver.Store(pub(a.system), sysJWT); err != nil {
		return err
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.SystemAccount = pub(a.system)
	opts.AccountResolver = resolver
	return nil
}

// NATSConfig is the part of a nats-server configuration that makes an
// external NATS (a cluster of three, say) trust the authority as the embedded
// server does: the operator, the system account, and the accounts preloaded
// with their revocations. Write it again and reload the servers after a revocation.
func (a *Authority) NATSConfig() (string, error) {
	oc := jwt.NewOperatorClaims(pub(a.operator))
	oc.Name = "skein"
	oc.SystemAccount = pub(a.system)
	op, err := oc.Encode(a.operator)
	if err != nil {
		return "", err
	}
	acc, err := a.accountJWT()
	if err != nil {
		return "", err
	}
	sys, err := a.systemJWT()
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("# skein's bus authority; include it in each node's nats-server.conf.\noperator: %q\nsystem_account: %s\nresolver: MEMORY\nresolver_preload: {\n  %s: %q\n  %s: %q\n}\n",
		op, pub(a.system), pub(a.account), acc, pub(a.system), sys), nil
}

// Creds issues credentials for a role: a NATS creds file (a user JWT signed
// by the account, and the user's seed), recorded so it can be revoked.
func (a *Authority) Creds(r Role) ([]byte, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, err
	}
	uc := jwt.NewUserClaims(pub(user))
	uc.Name = r.Name()
	uc.IssuerAccount = ""
	uc.Permissions = r.Permissions()
	uc.Tags.Add("skein-role:" + r.Kind)
	token, err := uc.Encode(a.account)
	if err != nil {
		return nil, err
	}
	seed, err := user.Seed()
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	err = a.changeLedger(func(l *ledger) { l.Issued[r.Name()] = append(l.Issued[r.Name()], pub(user)) })
	a.mu.Unlock()
	if err != nil {
		return nil, err
	}
	a.tell()
	creds, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return nil, err
	}
	if line := a.keysLine(r); line != "" {
		creds = append(creds, formatKeys(line)...)
	}
	return creds, nil
}

// tell has a server following the authority look at the ledger again.
func (a *Authority) tell() {
	select {
	case a.changed <- struct{}{}:
	default: // one pending look sees this change too
	}
}

// Issued lists the roles credentials were issued for, sorted by name;
// revoked ones too: commands queued for a server wait for its new credentials.
func (a *Authority) Issued() []Role {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []Role
	for name := range a.ledger.Issued {
		if server, ok := strings.CutPrefix(name, "agent-"); ok {
			if ValidToken(server) {
				out = append(out, Role{Kind: "agent", Server: server})
			}
			continue
		}
		if r, err := ParseRole(name, ""); err == nil {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Revoke revokes every credential issued for a role so far; it returns how
// many. A server that runs with the authority applies it (ApplyRevocations).
func (a *Authority) Revoke(r Role) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var users []string
	err := a.changeLedger(func(l *ledger) {
		users = l.Issued[r.Name()]
		now := time.Now().Unix()
		for _, u := range users {
			l.Revoked[u] = now
		}
	})
	if err != nil {
		return 0, err
	}
	a.tell()
	return len(users), nil
}

// roleOfUser is the role a user's credentials were issued for.
func (a *Authority) roleOfUser(user string) (Role, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r, ok := a.issuedTo(user); ok {
		return r, ok
	}
	// Issued by another process since the ledger was read.
	if err := a.readLedger(); err != nil {
		return Role{}, false
	}
	return a.issuedTo(user)
}

// issuedTo is roleOfUser in the ledger as read; a.mu held.
func (a *Authority) issuedTo(user string) (Role, bool) {
	for name, users := range a.ledger.Issued {
		if !slices.Contains(users, user) {
			continue
		}
		if server, ok := strings.CutPrefix(name, "agent-"); ok {
			return Role{Kind: "agent", Server: server}, true
		}
		r, err := ParseRole(name, "")
		return r, err == nil
	}
	return Role{}, false
}

// setMade records (user != "") or forgets the maker of consumer.
func (a *Authority) setMade(consumer, user string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.ledger.Made[consumer]; !ok && user == "" {
		return nil
	}
	return a.changeLedger(func(l *ledger) {
		if user == "" {
			delete(l.Made, consumer)
		} else {
			l.Made[consumer] = user
		}
	})
}

// madeByRevoked lists the consumers recorded as made by revoked users.
func (a *Authority) madeByRevoked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for c, u := range a.ledger.Made {
		if _, ok := a.ledger.Revoked[u]; ok {
			out = append(out, c)
		}
	}
	sort.Strings(out)
	return out
}

// Revoked lists the revoked users, sorted.
func (a *Authority) Revoked() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for u := range a.ledger.Revoked {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// ApplyRevocations rereads the ledger and gives the running server the
// account's claims with its revocations: the clients of revoked users are
// disconnected and refused from then on.
func (a *Authority) ApplyRevocations(ns *server.Server) error {
	a.mu.Lock()
	err := a.readLedger()
	a.mu.Unlock()
	if err != nil {
		return err
	}
	token, err := a.accountJWT()
	if err != nil {
		return err
	}
	ac, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		return err
	}
	acc, err := ns.LookupAccount(pub(a.account))
	if err != nil {
		return err
	}
	ns.UpdateAccountClaims(acc, ac)
	return nil
}

// LedgerModified is when the ledger last changed (zero when it never did).
func (a *Authority) LedgerModified() time.Time {
	fi, err := os.Stat(a.ledgerPath())
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}
