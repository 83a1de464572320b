package svc

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/events"
	"github.com/skeinhq/skein/internal/container"
)

// staleCreating is how long a creating record may go without its command
// answering before it counts as abandoned: longer than any command can live.
const staleCreating = time.Hour

// Reconcile repairs k's records on this server from what really runs, once:
// a ready record whose container is gone (deleted behind skein's back), or a
// creating record whose command failed or was abandoned, is removed with what
// is left of its container, and Gone announces it; a ready record whose
// container runs something else is made to run it again (k.Repair). Each record is repaired
// under its resource's lock, so no command on it runs meanwhile.
func Reconcile[T any, P Ptr[T]](ctx context.Context, h *Host, k *Kind[T, P]) {
	all, err := k.Store.ListServer(ctx, h.Server)
	if err != nil {
		h.Log.Warn().Err(err).Str("kind", k.Prefix).Msg("reconcile: listing records")
		return
	}
	for _, e := range all {
		name := P(&e.Value).Res().Name
		if err := repair(ctx, h, k, name); err != nil {
			h.Log.Warn().Err(err).Str(k.Prefix, name).Msg("reconcile")
		}
	}
}

// repair looks at one record under its lock and removes it if it is a ghost.
func repair[T any, P Ptr[T]](ctx context.Context, h *Host, k *Kind[T, P], name string) error {
	unlock, err := h.Locks.Lock(ctx, k.Lock(name))
	if err != nil {
		return err
	}
	defer unlock()
	e, err := k.Store.Find(ctx, bus.Key(h.Server, name))
	if err != nil || e == nil {
		return err
	}
	r := P(&e.Value).Res()
	inst, err := h.Runtime.Get(ctx, name)
	if err != nil && !errors.Is(err, container.ErrNotFound) {
		return err
	}
	switch r.Status {
	case events.StatusReady:
		if inst != nil {
			if k.Repair != nil && inst.Status == "Running" {
				return k.Repair(ctx, e.Value)
			}
			return nil
		}
	default:
		res, err := h.Answered(ctx, r.Command)
		if err != nil {
			return err
		}
		failed := res != nil && !res.OK
		abandoned := res == nil && time.Since(r.Updated) > staleCreating
		if !failed && !abandoned {
			return nil // its command is still at work
		}
		if inst != nil && inst.Command == r.Command {
			if err := h.Runtime.Stop(ctx, name, true); err != nil && !errors.Is(err, container.ErrNotFound) {
				return err
			}
			if err := h.Runtime.Delete(ctx, name); err != nil && !errors.Is(err, container.ErrNotFound) {
				return err
			}
		}
	}
	if err := k.Store.Delete(ctx, e.Key, e.Revision); err != nil {
		return err
	}
	h.Log.Info().Str(k.Prefix, name).Str("status", r.Status).Msg("reconcile: removed a record whose container is gone")
	if k.Gone != nil {
		k.Gone(ctx, e.Value)
	}
	return nil
}

// Follow reconciles k at once, then whenever kick fires and every period,
// until ctx ends: on agent start, after a container is deleted, and as a net.
func Follow[T any, P Ptr[T]](ctx context.Context, h *Host, k *Kind[T, P], kick <-chan struct{}, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		Reconcile(ctx, h, k)
		select {
		case <-ctx.Done():
			return
		case <-kick:
		case <-t.C:
		}
	}
}

func clone[T any](v T) (T, error) {
	var out T
	b, err := json.Marshal(v)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(b, &out)
	return out, err
}

func mustJSON(v any) []byte {
	b, _ := json.Marshal(v)
	return b
}

func fromJSON[T any](s string) (T, error) {
	var v T
	err := json.Unmarshal([]byte(s), &v)
	return v, err
}
