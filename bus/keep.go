package bus

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/skeinhq/skein/events"
)

// Keep puts back server's records that another server overwrote or deleted
// (a copy or a marker of its own had stored under server's keys: no
// permission covers where the bus's server sends a reply). Readers refuse
// such a record already; Keep makes the stored one again the last record
// its writer signed, so that what the cluster reads equals what runs. It
// follows every bucket of records that server's agent may write, until ctx
// ends; report is told of each record put back or left refused.
//
// On a bus without credentials it does nothing. A record forged before
// Keep started has no good value to go back to: it is reported and left
// refused.
func Keep(ctx context.Context, js jetstream.JetStream, server string, report func(bucket, key string, err error)) {
	var kept []Kept
	for _, spec := range events.Specs() {
		if spec.Kind != events.KindState || schedulerBuckets[spec.Bucket] {
			continue
		}
		filter := server + ".>"
		if spec.Bucket == heartbeatBucket {
			filter = server
		}
		kept = append(kept, Kept{Bucket: spec.Bucket, Filter: filter})
	}
	KeepKeys(ctx, js, kept, report)
}

// KeepAll is Keep of every record of every server, run by the bus's server
// with the admin's js: a record forged while its own agent is down (or
// restarting, or cut from the bus) is put back from the last value its
// writer signed that the server saw, instead of reading as refused until
// the agent writes it again. An agent's Keep and this may both put a record
// back: the second finds the revision moved and writes nothing. Not the
// heartbeats (a down server's last beat put back would read as a beat) nor
// the scheduler's lease (a stale lease held again would only delay the
// next leader).
func KeepAll(ctx context.Context, js jetstream.JetStream, report func(bucket, key string, err error)) {
	var kept []Kept
	for _, spec := range events.Specs() {
		if spec.Kind == events.KindState && spec.Bucket != heartbeatBucket && spec.Bucket != "skein_leader" {
			kept = append(kept, Kept{Bucket: spec.Bucket, Filter: ">"})
		}
	}
	KeepKeys(ctx, js, kept, report)
}

// Kept are keys of a bucket that KeepKeys follows.
type Kept struct {
	// Bucket is the bucket.
	Bucket string
	// Filter is the keys, with wildcards.
	Filter string
}

// SchedulerKept are the keys the scheduler keeps: the jobs, its lease and
// its own records.
func SchedulerKept() []Kept {
	out := []Kept{{Bucket: "skein_jobs", Filter: "job.>"}, {Bucket: "skein_leader", Filter: "scheduler.>"}}
	for _, spec := range events.Specs() {
		if spec.Kind == events.KindState && !schedulerBuckets[spec.Bucket] && spec.Bucket != heartbeatBucket {
			out = append(out, Kept{Bucket: spec.Bucket, Filter: SchedulerName + ".>"})
		}
	}
	return out
}

// KeepKeys is Keep of the keys kept names, for a writer of them.
func KeepKeys(ctx context.Context, js jetstream.JetStream, kept []Kept, report func(bucket, key string, err error)) {
	if js.Conn().Opts.UserJWT == nil {
		return // a bus without credentials signs nothing: nothing to tell apart
	}
	for _, k := range kept {
		for _, spec := range events.Specs() {
			if spec.Kind == events.KindState && spec.Bucket == k.Bucket {
				go keepBucket(ctx, js, spec, k.Filter, report)
			}
		}
	}
}

// keepBucket is Keep of one bucket's keys under filter, its watch started
// again when it breaks.
func keepBucket(ctx context.Context, js jetstream.JetStream, spec events.Spec, filter string, report func(bucket, key string, err error)) {
	good := map[string][]byte{} // key → its last record its writer signed, unsigned
	// Started again at once when the connection comes back (Store.Follow's reason).
	reconnected := js.Conn().StatusChanged(nats.CONNECTED)
	defer js.Conn().RemoveStatusListener(reconnected)
	for ctx.Err() == nil {
		kv, err := js.KeyValue(ctx, spec.Bucket)
		var w jetstream.KeyWatcher
		if err == nil {
			w, err = kv.Watch(ctx, filter)
		}
		if err != nil {
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
	follow:
		for {
			select {
			case <-ctx.Done():
				break follow
			case <-reconnected:
				break follow
			case e, ok := <-w.Updates():
				if !ok {
					break follow
				}
				if e == nil {
					continue // the records that were there are in
				}
				if err := keepEntry(ctx, js, spec, e, good); err != nil {
					report(spec.Bucket, e.Key(), err)
				}
			}
		}
		_ = w.Stop()
	}
}

// keepEntry takes a change of one key: a good one is remembered, a bad
// one replaced by the key's last good record, when there is one.
func keepEntry(ctx context.Context, js jetstream.JetStream, spec events.Spec, e jetstream.KeyValueEntry, good map[string][]byte) error {
	nc := js.Conn()
	var bad error
	if e.Operation() == jetstream.KeyValuePut {
		v, err := CheckedRecord(nc, spec.Bucket, e.Key(), e.Value(), e.Created())
		if err == nil {
			good[e.Key()] = v
			return nil
		}
		bad = err
	} else {
		if bad = checkDeletion(nc, spec.Bucket, e.Key(), e.Value(), e.Created()); bad == nil {
			delete(good, e.Key())
			return nil
		}
	}
	last, ok := good[e.Key()]
	if !ok {
		return fmt.Errorf("left refused, no record of its writer's to put back: %w", bad)
	}
	v := reflect.New(spec.Go).Interface()
	if err := json.Unmarshal(last, v); err != nil {
		return err
	}
	if err := signRecord(nc, spec.Bucket, e.Key(), v); err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	m := nats.NewMsg("$KV." + spec.Bucket + "." + e.Key())
	m.Data = b
	// Only over the bad change: a good write since then stays.
	m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(e.Revision(), 10))
	wctx, cancel := context.WithTimeout(ctx, writeAttempt)
	defer cancel()
	if _, err := js.PublishMsg(wctx, m); err != nil && !isWrongRevision(err) {
		return fmt.Errorf("putting back its record after %v: %w", bad, err)
	}
	return fmt.Errorf("put back its record: %w", bad)
}
