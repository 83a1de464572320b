package bus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// Errors of the store, wrapped with the key they are about.
var (
	// ErrNoRecord means the key has no record.
	ErrNoRecord = errors.New("no record")
	// ErrExists means Create found a record already there.
	ErrExists = errors.New("record exists")
	// ErrConflict means the record changed since it was read: read it again.
	ErrConflict = errors.New("record changed concurrently")
)

// modifyTries bounds the read-change-write rounds of Modify under contention.
const modifyTries = 16

// Entry is one record with the revision it was read at.
type Entry[T any] struct {
	// Key is the record's key (a name).
	Key string
	// Value is the record.
	Value T
	// Revision is what Update and Delete compare against.
	Revision uint64
}

// Change is one change seen by Watch.
type Change[T any] struct {
	// Key is the record's key.
	Key string
	// Value is the record after the change; nil when it was deleted.
	Value *T
	// Revision is the change's revision.
	Revision uint64
	// Synced marks the end of the records that existed when the watch began
	// (Key and Value are empty then).
	Synced bool
	// refused marks a record a watch skipped (Follow's watch only).
	refused bool
}

// Store is the one typed access to a bucket of records of type T: reads decode,
// writes are validated against T's schema, and every change of a record that
// several writers share is compared against the revision it was read at.
type Store[T any] struct {
	kv   jetstream.KeyValue
	js   jetstream.JetStream
	nc   *nats.Conn
	spec events.Spec
	// refused, when set, is told of each record a list or watch skips.
	refused func(key string, err error)
}

// OnRefused has f told of every record that a List or Watch skips because it
// is unreadable or not its writer's (a forged copy stored under the key): the
// record keeps its last good value there, and f says why.
func (s *Store[T]) OnRefused(f func(key string, err error)) { s.refused = f }

func (s *Store[T]) refuse(key string, err error) {
	if s.refused != nil {
		s.refused(key, err)
	}
}

// OpenStore opens the bucket of the record type T (see events.StateOf).
func OpenStore[T any](ctx context.Context, js jetstream.JetStream) (*Store[T], error) {
	spec, ok := events.StateOf[T]()
	if !ok {
		var zero T
		return nil, fmt.Errorf("bus: %T is not a registered record type", zero)
	}
	kv, err := retrying(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return js.KeyValue(ctx, spec.Bucket) })
	if err != nil {
		return nil, fmt.Errorf("bus: bucket %s: %w", spec.Bucket, err)
	}
	return &Store[T]{kv: kv, js: js, nc: js.Conn(), spec: spec}, nil
}

// Key is the key of the record of server named name. Records live under
// their server's name, so that an agent's permission to write its own records
// is one subject prefix ($KV.<bucket>.<server>.>).
func Key(server, name string) string { return server + "." + name }

// A read that finds its stream without a leader (a node of a NATS cluster
// lost: the others elect a new one within 1-2 s on skein's nodes) is tried
// again, for up to readPatience. A stream between leaders answers nothing
// (its followers ignore API requests), so an attempt ends only when it
// times out: those of the first electionWindow are short
// (FirstReadAttempt), to find the new leader soon after it is elected;
// later ones readAttempt, for a server that is only slow.
const (
	readAttempt  = time.Second
	readPatience = 20 * time.Second
	// FirstReadAttempt bounds a read's first attempts: one that took longer
	// waited for an election, or a loaded server.
	FirstReadAttempt = 250 * time.Millisecond
	// electionWindow covers an election of skein's NATS nodes (bus.SkeinRaft:
	// 1-2 s) with a margin.
	electionWindow = 2500 * time.Millisecond
)

// writeAttempt bounds one write: a write whose acknowledgement was lost (the
// NATS node that took it killed) waits for it no longer than this, then fails
// as a transient error its command is retried for, instead of holding the
// command until its deadline (found by the NATS-cluster soak: a launch whose
// record write hung for the launch's whole 2 min and failed it for good).
var writeAttempt = 10 * time.Second

// errNoAnswer is a read that got no answer in time.
var errNoAnswer = errors.New("no answer from the stream")

// leaderless says whether a read failed for want of an answer (a stream
// without a leader for the moment), not for good.
func leaderless(err error) bool {
	// 10008, "JetStream system temporarily unavailable": a cluster between
	// leaders. nats.go gives it as an API error or, from a status header
	// (direct gets, KV listers), as its text alone; TestNATSCluster meets both.
	var api *jetstream.APIError
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) || errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, errNoAnswer) ||
		(errors.As(err, &api) && api.ErrorCode == clusterNotAvailable) ||
		(err != nil && strings.Contains(err.Error(), "temporarily unavailable"))
}

// clusterNotAvailable is nats-server's JSClusterNotAvailErr.
const clusterNotAvailable jetstream.ErrorCode = 10008

// retrying runs a read until it answers, fails for good, or readPatience or
// ctx ends.
func retrying[R any](ctx context.Context, read func(ctx context.Context) (R, error)) (R, error) {
	return Retrying(ctx, readPatience, read)
}

// Retrying runs a read of a stream until it answers, fails for good (any
// error but a stream between leaders), or patience or ctx ends; each
// attempt is bounded by FirstReadAttempt during an election's length, then
// by a second.
func Retrying[R any](ctx context.Context, patience time.Duration, read func(ctx context.Context) (R, error)) (R, error) {
	start := time.Now()
	deadline := start.Add(patience)
	for {
		attempt := FirstReadAttempt
		if time.Since(start) > electionWindow {
			attempt = readAttempt
		}
		actx, cancel := context.WithTimeout(ctx, attempt)
		r, err := read(actx)
		timedOut := actx.Err() != nil
		cancel()
		if err == nil || ctx.Err() != nil || !leaderless(err) || time.Now().After(deadline) {
			return r, err
		}
		// An attempt that timed out has waited already: the next one goes
		// at once, so a read finds a new leader within an attempt of its
		// election, not an attempt and a pause.
		if timedOut {
			continue
		}
		if perr := pause(ctx); perr != nil {
			return r, err
		}
	}
}

// electing runs a write again while its stream has no leader to take it
// (nobody answered: nothing was stored), for up to electionWindow: a
// command whose record's bucket is electing a leader (a NATS node lost)
// goes on within the election rather than failing and being delivered
// again seconds later (found by BenchmarkNATSNodeLoss: 3.6 s, the
// definitions' write refused twice, against 1.6 s).
func electing(ctx context.Context, write func() error) error {
	start := time.Now()
	for {
		err := write()
		if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) || time.Since(start) > electionWindow {
			return err
		}
		if perr := pause(ctx); perr != nil {
			return err
		}
	}
}

// pause waits a little before another attempt.
func pause(ctx context.Context) error {
	t := time.NewTimer(100 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ErrAmbiguous means a name has records on more than one server.
var ErrAmbiguous = errors.New("name used on more than one server")

// FindByName reads the record named name on whichever server holds it; nil
// when none does, ErrAmbiguous when several do.
func (s *Store[T]) FindByName(ctx context.Context, name string) (*Entry[T], error) {
	keys, err := retrying(ctx, func(ctx context.Context) ([]string, error) {
		lister, err := s.kv.ListKeysFiltered(ctx, "*."+name)
		if err != nil {
			return nil, err
		}
		var keys []string
		for k := range lister.Keys() {
			keys = append(keys, k)
		}
		// The lister closes its channel early when its context ends.
		return keys, ctx.Err()
	})
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("looking up %s %q: %w", s.spec.Type, name, err)
	}
	switch len(keys) {
	case 0:
		return nil, nil
	case 1:
		return s.Find(ctx, keys[0])
	}
	sort.Strings(keys)
	return nil, fmt.Errorf("%s %q: %w (%s)", s.spec.Type, name, ErrAmbiguous, strings.Join(keys, ", "))
}

// ListServer reads the records of one server, sorted by key.
func (s *Store[T]) ListServer(ctx context.Context, server string) ([]Entry[T], error) {
	return s.list(ctx, server+".>")
}

// Bucket is the name of the store's bucket.
func (s *Store[T]) Bucket() string { return s.spec.Bucket }

// Get reads one record; ErrNoRecord when there is none.
func (s *Store[T]) Get(ctx context.Context, key string) (Entry[T], error) {
	e, err := retrying(ctx, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return s.kv.Get(ctx, key) })
	if errors.Is(err, jetstream.ErrInvalidKey) {
		return Entry[T]{Key: key}, fmt.Errorf("%s %q: %w", s.spec.Type, key, ErrNoRecord)
	}
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Entry[T]{Key: key}, s.absent(ctx, key)
	}
	if err != nil {
		return Entry[T]{Key: key}, fmt.Errorf("reading %s %q: %w", s.spec.Type, key, err)
	}
	return s.decode(key, e.Value(), e.Revision(), e.Created())
}

// Latest reads one record from its bucket's leader: Get may be answered by a
// replica that is catching up (a restarted node of a NATS cluster) with an
// older value, fine for showing, not for deciding that a server is down.
// ErrNoRecord when there is none.
func (s *Store[T]) Latest(ctx context.Context, key string) (Entry[T], error) {
	m, err := s.last(ctx, key)
	if err != nil {
		return Entry[T]{Key: key}, err
	}
	if m == nil || isDeletion(m.Header) {
		return Entry[T]{Key: key}, s.gone(key, m)
	}
	return s.decode(key, m.Data, 0, m.Time)
}

// absent is why Get found no record under key: ErrNoRecord, unless the key's
// last message is a deletion not its writer's (had stored there by another
// server), which is refused like a forged record. Only a bus with
// credentials signs deletions: there, the marker is read to be checked.
func (s *Store[T]) absent(ctx context.Context, key string) error {
	if s.nc == nil || s.nc.Opts.UserJWT == nil {
		return s.gone(key, nil)
	}
	m, err := s.last(ctx, key)
	if err != nil {
		return err
	}
	return s.gone(key, m)
}

// gone is why key holds no record, its last message being m (nil: none, or
// a deletion's marker): ErrNoRecord, or the refusal of a marker its
// record's writers did not sign.
func (s *Store[T]) gone(key string, m *StoredMsg) error {
	if m != nil && isDeletion(m.Header) {
		if err := checkDeletion(s.nc, s.spec.Bucket, key, m.Data, m.Time); err != nil {
			return fmt.Errorf("%s record %q: %w", s.spec.Type, key, err)
		}
	}
	return fmt.Errorf("%s %q: %w", s.spec.Type, key, ErrNoRecord)
}

// last reads key's last message from the bucket's leader; nil when it never
// had one.
func (s *Store[T]) last(ctx context.Context, key string) (*StoredMsg, error) {
	m, err := retrying(ctx, func(ctx context.Context) (*StoredMsg, error) {
		return LastStored(ctx, s.nc, "KV_"+s.spec.Bucket, "$KV."+s.spec.Bucket+"."+key)
	})
	if err != nil {
		return nil, fmt.Errorf("reading %s %q: %w", s.spec.Type, key, err)
	}
	return m, nil
}

// Revision is the revision of key's last change, whatever it holds (a
// record, a deletion, a copy not its writer's); 0 when it never had one.
// Update at it writes over whatever is there, and only that.
func (s *Store[T]) Revision(ctx context.Context, key string) (uint64, error) {
	m, err := s.last(ctx, key)
	if err != nil || m == nil {
		return 0, err
	}
	return m.Seq, nil
}

// Find reads one record; nil when there is none.
func (s *Store[T]) Find(ctx context.Context, key string) (*Entry[T], error) {
	e, err := s.Get(ctx, key)
	if errors.Is(err, ErrNoRecord) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &e, nil
}

func (s *Store[T]) decode(key string, raw []byte, rev uint64, stored time.Time) (Entry[T], error) {
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return Entry[T]{Key: key}, fmt.Errorf("bad %s record %q: %w", s.spec.Type, key, err)
	}
	if err := s.owned(key, raw); err != nil {
		return Entry[T]{Key: key}, err
	}
	if err := verifyRecord(s.nc, s.spec.Bucket, key, serverOfKey(s.spec.Bucket, key), &v, stored); err != nil {
		return Entry[T]{Key: key}, fmt.Errorf("%s record %q: %w", s.spec.Type, key, err)
	}
	return Entry[T]{Key: key, Value: v, Revision: rev}, nil
}

// owned refuses a record that names another server than the key it is
// stored under: keys carry the server whose agent may write them, and a
// record written under one server's key is never taken as another's.
func (s *Store[T]) owned(key string, raw []byte) error {
	var probe struct {
		Name   string  `json:"name"`
		Server *string `json:"server"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return fmt.Errorf("bad %s record %q: %w", s.spec.Type, key, err)
	}
	switch {
	case s.spec.Bucket == heartbeatBucket && probe.Name != key:
		return fmt.Errorf("%s record %q names server %q: refused", s.spec.Type, key, probe.Name)
	case s.spec.Bucket != heartbeatBucket && probe.Server != nil && *probe.Server != "" && !strings.HasPrefix(key, *probe.Server+"."):
		return fmt.Errorf("%s record %q says server %q: refused", s.spec.Type, key, *probe.Server)
	}
	return nil
}

// serverOfKey is the server whose agent writes key: heartbeats are keyed by
// server, other records by server.name.
func serverOfKey(bucket, key string) string {
	if bucket == heartbeatBucket {
		return key
	}
	server, _, _ := strings.Cut(key, ".")
	return server
}

func (s *Store[T]) encode(key string, v T) ([]byte, error) {
	if err := signRecord(s.nc, s.spec.Bucket, key, &v); err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %q: %w", s.spec.Type, key, err)
	}
	if err := events.ValidateState(s.spec.Type, b); err != nil {
		return nil, fmt.Errorf("refusing to store %s %q: %w", s.spec.Type, key, err)
	}
	return b, nil
}

// List reads every record, sorted by key.
func (s *Store[T]) List(ctx context.Context) ([]Entry[T], error) {
	return s.list(ctx, ">")
}

func (s *Store[T]) list(ctx context.Context, filter string) ([]Entry[T], error) {
	start := time.Now()
	deadline := start.Add(readPatience)
	for {
		attempt := FirstReadAttempt
		if time.Since(start) > electionWindow {
			attempt = readAttempt
		}
		out, err := s.listOnce(ctx, filter, attempt)
		if !errors.Is(err, errNoAnswer) || time.Now().After(deadline) {
			return out, err
		}
		if err := pause(ctx); err != nil {
			return nil, fmt.Errorf("listing %s: %w", s.spec.Bucket, err)
		}
	}
}

// listOnce lists once; errNoAnswer when the bucket did not start answering
// within attempt (its stream had no leader).
func (s *Store[T]) listOnce(ctx context.Context, filter string, attempt time.Duration) ([]Entry[T], error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := s.kv.Watch(wctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		if leaderless(err) && ctx.Err() == nil {
			return nil, errNoAnswer
		}
		return nil, fmt.Errorf("listing %s: %w", s.spec.Bucket, err)
	}
	defer w.Stop()
	first := time.NewTimer(attempt)
	defer first.Stop()
	var out []Entry[T]
	for {
		select {
		case <-first.C:
			return nil, errNoAnswer
		case <-ctx.Done():
			return nil, fmt.Errorf("listing %s: %w", s.spec.Bucket, ctx.Err())
		case e, ok := <-w.Updates():
			first.Stop()
			if !ok || e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
				return out, nil
			}
			d, err := s.decode(e.Key(), e.Value(), e.Revision(), e.Created())
			if err != nil {
				s.refuse(e.Key(), err)
				continue
			}
			out = append(out, d)
		}
	}
}

// Values reads every record's value, sorted by key.
func (s *Store[T]) Values(ctx context.Context) ([]T, error) {
	all, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]T, 0, len(all))
	for _, e := range all {
		out = append(out, e.Value)
	}
	return out, nil
}

// Create writes a record where there is none: the way to reserve a name exactly
// once. ErrExists when the key has a record.
func (s *Store[T]) Create(ctx context.Context, key string, v T) (uint64, error) {
	b, err := s.encode(key, v)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	var rev uint64
	err = electing(wctx, func() (err error) { rev, err = s.kv.Create(wctx, key, b); return err })
	if errors.Is(err, jetstream.ErrKeyExists) {
		return 0, fmt.Errorf("%s %q: %w", s.spec.Type, key, ErrExists)
	}
	if err != nil {
		return 0, fmt.Errorf("creating %s %q: %w", s.spec.Type, key, err)
	}
	return rev, nil
}

// checkRevisions is true but in a broken build made to show that the soak's
// checker catches lost updates (go build -tags skeinbroken, SKEIN_BROKEN=norevision).
var checkRevisions = true

// Update replaces a record read at revision rev; ErrConflict when it changed since.
func (s *Store[T]) Update(ctx context.Context, key string, v T, rev uint64) (uint64, error) {
	b, err := s.encode(key, v)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	if !checkRevisions {
		// A broken build's Update (see broken.go): whatever is there is overwritten.
		nrev, err := s.kv.Put(wctx, key, b)
		if err != nil {
			return 0, fmt.Errorf("writing %s %q: %w", s.spec.Type, key, err)
		}
		return nrev, nil
	}
	var nrev uint64
	err = electing(wctx, func() (err error) { nrev, err = s.kv.Update(wctx, key, b, rev); return err })
	if isWrongRevision(err) {
		return 0, fmt.Errorf("%s %q: %w", s.spec.Type, key, ErrConflict)
	}
	if err != nil {
		return 0, fmt.Errorf("writing %s %q: %w", s.spec.Type, key, err)
	}
	return nrev, nil
}

// Put writes a record whatever is there: only for records with a single writer
// (a server's heartbeat, a container's record written by its server).
func (s *Store[T]) Put(ctx context.Context, key string, v T) (uint64, error) {
	b, err := s.encode(key, v)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	var rev uint64
	err = electing(wctx, func() (err error) { rev, err = s.kv.Put(wctx, key, b); return err })
	if err != nil {
		return 0, fmt.Errorf("writing %s %q: %w", s.spec.Type, key, err)
	}
	return rev, nil
}

// Delete removes a record read at revision rev (0: whatever is there);
// ErrConflict when it changed since. Deleting a missing record succeeds.
func (s *Store[T]) Delete(ctx context.Context, key string, rev uint64) error {
	// The marker carries a signed tombstone: readers take a deletion only
	// from whoever may write the record.
	body, err := signedDeletion(s.nc, s.spec.Bucket, key)
	if err != nil {
		return fmt.Errorf("deleting %s %q: %w", s.spec.Type, key, err)
	}
	m := nats.NewMsg("$KV." + s.spec.Bucket + "." + key)
	m.Data = body
	m.Header.Set(kvOperation, "DEL")
	if rev > 0 {
		m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(rev, 10))
	}
	wctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	err = electing(wctx, func() error { _, err := s.js.PublishMsg(wctx, m); return err })
	if isWrongRevision(err) {
		return fmt.Errorf("%s %q: %w", s.spec.Type, key, ErrConflict)
	}
	if err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("deleting %s %q: %w", s.spec.Type, key, err)
	}
	return nil
}

// Modify reads a record, lets edit change it and writes it back at the revision
// it read, again from the read when someone wrote in between. edit gets the
// zero T and false when there is no record; its error ends Modify unwritten.
func (s *Store[T]) Modify(ctx context.Context, key string, edit func(cur T, exists bool) (T, error)) (Entry[T], error) {
	for try := 0; ; try++ {
		cur, err := s.Find(ctx, key)
		if err != nil {
			return Entry[T]{Key: key}, err
		}
		var v T
		if cur != nil {
			v = cur.Value
		}
		next, err := edit(v, cur != nil)
		if err != nil {
			return Entry[T]{Key: key}, err
		}
		var rev uint64
		if cur == nil {
			rev, err = s.Create(ctx, key, next)
		} else {
			rev, err = s.Update(ctx, key, next, cur.Revision)
		}
		if err == nil {
			return Entry[T]{Key: key, Value: next, Revision: rev}, nil
		}
		if !errors.Is(err, ErrConflict) && !errors.Is(err, ErrExists) || try+1 >= modifyTries {
			return Entry[T]{Key: key}, err
		}
		// Someone wrote in between: back off a little, at random, and read again.
		select {
		case <-ctx.Done():
			return Entry[T]{Key: key}, ctx.Err()
		case <-time.After(time.Duration(rand.IntN(5*(try+1))) * time.Millisecond):
		}
	}
}

// Watch streams the records that exist, then a Synced change, then every change
// until ctx ends or the watch breaks (the channel closes).
func (s *Store[T]) Watch(ctx context.Context) (<-chan Change[T], error) {
	return s.watch(ctx, ">")
}

// WatchServer is Watch of one server's records.
func (s *Store[T]) WatchServer(ctx context.Context, server string) (<-chan Change[T], error) {
	return s.watch(ctx, server+".>")
}

func (s *Store[T]) watch(ctx context.Context, filter string) (<-chan Change[T], error) {
	return s.watchTelling(ctx, filter, false)
}

// watchTelling is watch; with refused, a record it skips comes as a Change
// marked refused (Follow counts its key as still there).
func (s *Store[T]) watchTelling(ctx context.Context, filter string, refused bool) (<-chan Change[T], error) {
	w, err := s.kv.Watch(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("watching %s: %w", s.spec.Bucket, err)
	}
	out := make(chan Change[T], 64)
	go func() {
		defer close(out)
		defer w.Stop()
		for {
			var c Change[T]
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				switch {
				case e == nil:
					c.Synced = true
				case e.Operation() == jetstream.KeyValuePut:
					d, err := s.decode(e.Key(), e.Value(), e.Revision(), e.Created())
					if err != nil {
						s.refuse(e.Key(), err)
						if !refused {
							continue
						}
						c = Change[T]{Key: e.Key(), Revision: e.Revision(), refused: true}
						break
					}
					c = Change[T]{Key: e.Key(), Value: &d.Value, Revision: e.Revision()}
				default:
					if err := checkDeletion(s.nc, s.spec.Bucket, e.Key(), e.Value(), e.Created()); err != nil {
						s.refuse(e.Key(), fmt.Errorf("%s record %q: %w", s.spec.Type, e.Key(), err))
						if !refused {
							continue
						}
						c = Change[T]{Key: e.Key(), Revision: e.Revision(), refused: true}
						break
					}
					c = Change[T]{Key: e.Key(), Revision: e.Revision()}
				}
			}
			select {
			case out <- c:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// isWrongRevision reports a failed compare-and-set.
func isWrongRevision(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Follow is Watch of the records under filter (">", or "SERVER.>") that
// lasts until ctx ends, whatever happens to the bus: the records there are,
// Synced, then every change. A watch that breaks, or whose connection
// reconnects (the bus restarted, a NATS node lost: nats.go's own watch took
// 20 s to resume, TestFollowCarriesOnAcrossABusRestart), is started again at
// once, and what changed meanwhile comes as changes, deletions included,
// then Synced again. A record refused (not its writer's) keeps, for the
// follower, its last good value. broken, when set, is told why a watch
// could not start.
func (s *Store[T]) Follow(ctx context.Context, filter string, broken func(error)) <-chan Change[T] {
	out := make(chan Change[T], 64)
	go func() {
		defer close(out)
		send := func(c Change[T]) bool {
			select {
			case out <- c:
				return true
			case <-ctx.Done():
				return false
			}
		}
		reconnected := s.nc.StatusChanged(nats.CONNECTED)
		defer s.nc.RemoveStatusListener(reconnected)
		known := map[string]uint64{} // key → revision the follower was given
		wait := 250 * time.Millisecond
		for ctx.Err() == nil {
			wctx, stop := context.WithCancel(ctx)
			ch, err := s.watchTelling(wctx, filter, true)
			if err != nil {
				stop()
				if broken != nil {
					broken(err)
				}
				select {
				case <-ctx.Done():
				case <-reconnected:
				case <-time.After(wait):
				}
				wait = min(2*wait, 5*time.Second)
				continue
			}
			wait = 250 * time.Millisecond
			if !s.follow(ctx, ch, reconnected, known, send) {
				stop()
				return
			}
			stop()
		}
	}()
	return out
}

// follow passes one watch's changes on until it breaks or its connection
// reconnects (true: start another), or ctx ends (false). Its first records
// are checked against known: the unchanged are not passed again, the keys
// gone are passed as deletions.
func (s *Store[T]) follow(ctx context.Context, ch <-chan Change[T], reconnected <-chan nats.Status, known map[string]uint64, send func(Change[T]) bool) bool {
	var replay map[string]bool // keys the watch's first records hold; nil once synced
	replay = map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-reconnected:
			return true
		case c, ok := <-ch:
			if !ok {
				return ctx.Err() == nil
			}
			switch {
			case c.Synced && replay != nil:
				for k := range known {
					if !replay[k] {
						delete(known, k)
						if !send(Change[T]{Key: k}) {
							return false
						}
					}
				}
				replay = nil
				if !send(c) {
					return false
				}
				continue
			case c.refused:
				if replay != nil {
					replay[c.Key] = true
				}
				continue
			case replay != nil:
				replay[c.Key] = c.Value != nil
				if c.Value == nil || known[c.Key] == c.Revision {
					continue // gone (told below if it was known) or unchanged
				}
			}
			if c.Value == nil {
				if _, had := known[c.Key]; !had {
					continue
				}
				delete(known, c.Key)
			} else {
				known[c.Key] = c.Revision
			}
			if !send(c) {
				return false
			}
		}
	}
}
