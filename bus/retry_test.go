package bus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A read that gets no answer is tried again until it answers; one that fails
// for good is not.
func TestRetryingReads(t *testing.T) {
	ctx := context.Background()
	calls := 0
	got, err := retrying(ctx, func(context.Context) (int, error) {
		calls++
		if calls < 3 {
			return 0, nats.ErrTimeout
		}
		return 7, nil
	})
	if got != 7 || err != nil || calls != 3 {
		t.Errorf("after two timeouts: %d %v in %d calls", got, err, calls)
	}
	calls = 0
	_, err = retrying(ctx, func(context.Context) (int, error) { calls++; return 0, jetstream.ErrKeyNotFound })
	if !errors.Is(err, jetstream.ErrKeyNotFound) || calls != 1 {
		t.Errorf("a missing key: %v in %d calls", err, calls)
	}
	cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = retrying(cctx, func(context.Context) (int, error) { return 0, nats.ErrNoResponders })
	if err == nil || time.Since(start) > 2*time.Second {
		t.Errorf("a caller's deadline ends the retries: %v after %s", err, time.Since(start))
	}
}

// A cluster between leaders answers "temporarily unavailable", as an API
// error or as a status header's text: both are tried again.
func TestRetryingReadsRideOutALeaderElection(t *testing.T) {
	for _, unavailable := range []error{
		&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"},
		errors.New("nats: JetStream system temporarily unavailable"),
	} {
		calls := 0
		got, err := retrying(context.Background(), func(context.Context) (int, error) {
			calls++
			if calls < 2 {
				return 0, unavailable
			}
			return 7, nil
		})
		if got != 7 || err != nil || calls != 2 {
			t.Errorf("after %q: %d %v in %d calls", unavailable, got, err, calls)
		}
	}
}

// A read of a stream between leaders finds the new leader within one
// attempt of its election: an attempt that timed out is followed by the
// next at once (with a pause after each, an election just after an attempt
// began was found 340 ms later).
func TestRetryingReadsFindTheNewLeaderWithinAnAttempt(t *testing.T) {
	for _, after := range []time.Duration{110 * time.Millisecond, 360 * time.Millisecond} {
		start := time.Now()
		elected := start.Add(after)
		_, err := retrying(context.Background(), func(ctx context.Context) (int, error) {
			if time.Now().Before(elected) {
				// A request in flight across the election is dropped.
				<-ctx.Done()
				return 0, ctx.Err()
			}
			return 7, nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if late := time.Since(elected); late > FirstReadAttempt+40*time.Millisecond {
			t.Errorf("a leader elected %v after the first attempt was found %v later, want within one attempt (%v)", after, late, FirstReadAttempt)
		}
	}
}
