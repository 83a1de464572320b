package incus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// maxWaitPoll bounds one long poll so a dead daemon or lost connection is noticed and retried (a var so tests can force expiries).
var maxWaitPoll = 30 * time.Second

// Operation is a handle on a background operation (instance create, state change, exec, ...).
type Operation struct {
	// c is the client (and project) the operation was started through.
	c *Client
	// mu guards data, which Wait refreshes while others may call Get.
	mu sync.Mutex
	// data is the operation as last seen.
	data APIOperation
}

// Get returns the operation as last seen (from the creating call, GetOperation or Wait); treat its maps as read-only.
func (op *Operation) Get() APIOperation {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.data
}

// ID returns the operation UUID.
func (op *Operation) ID() string {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.data.ID
}

// Wait long-polls /1.0/operations/<id>/wait until the operation is final or ctx ends; it returns *OperationError when the operation failed.
func (op *Operation) Wait(ctx context.Context) error {
	for {
		cur := op.Get()
		if cur.StatusCode.IsFinal() {
			return cur.asError()
		}
		fresh, err := op.poll(ctx, cur.ID)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("incus: wait for operation %s: %w", cur.ID, ctx.Err())
			}
			return fmt.Errorf("incus: wait for operation %s: %w", cur.ID, err)
		}
		op.mu.Lock()
		op.data = *fresh
		op.mu.Unlock()
	}
}

// poll does one long poll and returns the operation's latest state, which may still be running.
func (op *Operation) poll(ctx context.Context, id string) (*APIOperation, error) {
	secs := pollSeconds(ctx)
	start := time.Now()
	var fresh APIOperation
	q := url.Values{"timeout": {strconv.Itoa(secs)}}
	_, err := op.c.queryStruct(ctx, http.MethodGet, "/1.0/operations/"+url.PathEscape(id)+"/wait", q, nil, &fresh)
	if err == nil {
		return &fresh, nil
	}
	var se *StatusError
	if ctx.Err() != nil || !errors.As(err, &se) || se.StatusCode == http.StatusNotFound || se.StatusCode == http.StatusForbidden {
		return nil, err
	}
	// Incus 6.0 answers both an expired wait and a failed operation with an error body, so ask for the operation to tell them apart.
	var got APIOperation
	if _, gerr := op.c.queryStruct(ctx, http.MethodGet, "/1.0/operations/"+url.PathEscape(id), nil, nil, &got); gerr != nil {
		return nil, err
	}
	if got.StatusCode.IsFinal() {
		return &got, nil
	}
	// Still running: only a timed-out poll may be retried, otherwise a persistent error would spin.
	if strings.Contains(se.Message, "deadline exceeded") || time.Since(start) >= time.Duration(secs)*time.Second-time.Second {
		return &got, nil
	}
	return nil, err
}

// Cancel asks the server to cancel the operation (only works when MayCancel).
func (op *Operation) Cancel(ctx context.Context) error {
	_, _, err := op.c.query(ctx, http.MethodDelete, "/1.0/operations/"+url.PathEscape(op.ID()), nil, nil, nil)
	return err
}

// asError turns a final non-success operation into *OperationError.
func (o *APIOperation) asError() error {
	if o.StatusCode == Success {
		return nil
	}
	return &OperationError{ID: o.ID, Description: o.Description, StatusCode: o.StatusCode, Err: o.Err}
}

// pollSeconds picks the server-side wait timeout: maxWaitPoll, shortened to the ctx deadline so the server answers before we give up.
func pollSeconds(ctx context.Context) int {
	d := maxWaitPoll
	if deadline, ok := ctx.Deadline(); ok {
		if rem := time.Until(deadline); rem < d {
			d = rem
		}
	}
	return max(1, int(math.Ceil(d.Seconds())))
}

// GetOperation fetches an operation by UUID; finished operations are forgotten by the server a few seconds after they end (then 404).
func (c *Client) GetOperation(ctx context.Context, id string) (*Operation, error) {
	var data APIOperation
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/operations/"+url.PathEscape(id), nil, nil, &data); err != nil {
		return nil, err
	}
	return &Operation{c: c, data: data}, nil
}
