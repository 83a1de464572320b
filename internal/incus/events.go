package incus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"strings"
	"sync"

	"github.com/coder/websocket"
)

// maxEventSize bounds one event message; operation events can carry large metadata, beyond the library's 32 KiB default.
const maxEventSize = 16 << 20

// EventListener receives events from one /1.0/events websocket.
type EventListener struct {
	// conn is the events websocket.
	conn *websocket.Conn
	// events delivers decoded events; closed when the reader stops.
	events chan Event
	// cancel stops the reader.
	cancel context.CancelFunc
	// done is closed once the reader has stopped.
	done chan struct{}

	// mu guards err and closed, written by the reader and read by callers.
	mu sync.Mutex
	// err is why the reader stopped (nil after Close).
	err error
	// closed marks a deliberate Close so its error is not reported.
	closed bool
}

// GetEvents subscribes to events of the given types (all types when none), scoped to the client's project or all projects when it is ""; ctx bounds the handshake and the subscription.
func (c *Client) GetEvents(ctx context.Context, types ...string) (*EventListener, error) {
	q := url.Values{}
	if len(types) > 0 {
		q.Set("type", strings.Join(types, ","))
	}
	if c.project == "" {
		q.Set("all-projects", "true")
	}
	u, err := c.url("/1.0/events", q)
	if err != nil {
		return nil, err
	}
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPClient: c.http})
	if err != nil {
		if resp != nil && resp.Body != nil {
			if _, perr := parseResponse(resp); perr != nil {
				return nil, fmt.Errorf("GET /1.0/events: %w", perr)
			}
		}
		return nil, fmt.Errorf("incus: GET /1.0/events: %w", err)
	}
	conn.SetReadLimit(maxEventSize)
	lctx, cancel := context.WithCancel(ctx)
	l := &EventListener{
		conn:   conn,
		events: make(chan Event, 64),
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go l.run(lctx)
	return l, nil
}

// Events returns the channel of events; it is closed when the listener ends (see Err).
func (l *EventListener) Events() <-chan Event {
	return l.events
}

// Err returns why the listener ended: nil after Close, otherwise the read or context error.
func (l *EventListener) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close ends the subscription and waits for the reader to stop; it is safe to call more than once.
func (l *EventListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.cancel()
	<-l.done
	return nil
}

// run reads messages until the socket or ctx ends, delivering decoded events in order.
func (l *EventListener) run(ctx context.Context) {
	defer close(l.done)
	defer close(l.events)
	defer l.conn.CloseNow()
	for {
		_, data, err := l.conn.Read(ctx)
		if err != nil {
			l.fail(err)
			return
		}
		var ev Event
		if json.Unmarshal(data, &ev) != nil || ev.Type == "" {
			continue
		}
		select {
		case l.events <- ev:
		case <-ctx.Done():
			l.fail(ctx.Err())
			return
		}
	}
}

// fail records the terminal error unless the listener was closed on purpose.
func (l *EventListener) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return
	}
	if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
		err = io.EOF
	}
	l.err = fmt.Errorf("incus: events: %w", err)
}

// InstanceNameFromSource extracts the instance name from a lifecycle source such as "/1.0/instances/c1?project=p" (also for snapshot and log sub-paths); it returns "" for other resources.
func InstanceNameFromSource(source string) string {
	u, err := url.Parse(source)
	if err != nil {
		return ""
	}
	rest, ok := strings.CutPrefix(u.Path, "/1.0/instances/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}
