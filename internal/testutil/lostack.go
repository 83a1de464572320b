package testutil

import (
	"context"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"
)

// LostAck hands out bucket's KV with its next Update's acknowledgement lost
// once armed: the record lands, the writer hears an error, as when its
// agent is cut from the bus mid-write. Other buckets are js's own.
func LostAck(js jetstream.JetStream, bucket string, armed *atomic.Bool) jetstream.JetStream {
	return lostAckJS{JetStream: js, bucket: bucket, armed: armed}
}

type lostAckJS struct {
	jetstream.JetStream
	bucket string
	armed  *atomic.Bool
}

func (j lostAckJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil || bucket != j.bucket {
		return kv, err
	}
	return lostAckKV{KeyValue: kv, armed: j.armed}, nil
}

type lostAckKV struct {
	jetstream.KeyValue
	armed *atomic.Bool
}

func (k lostAckKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	n, err := k.KeyValue.Update(ctx, key, value, rev)
	if err == nil && k.armed.CompareAndSwap(true, false) {
		return 0, context.DeadlineExceeded
	}
	return n, err
}

// Unanswered hands out bucket's KV with its next Update unanswered once
// armed: the write waits for its deadline and stores nothing, as one sent
// to a bucket between leaders does (its followers drop it without a word).
func Unanswered(js jetstream.JetStream, bucket string, armed *atomic.Bool) jetstream.JetStream {
	return unansweredJS{JetStream: js, bucket: bucket, armed: armed}
}

type unansweredJS struct {
	jetstream.JetStream
	bucket string
	armed  *atomic.Bool
}

func (j unansweredJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil || bucket != j.bucket {
		return kv, err
	}
	return unansweredKV{KeyValue: kv, armed: j.armed}, nil
}

type unansweredKV struct {
	jetstream.KeyValue
	armed *atomic.Bool
}

func (k unansweredKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if k.armed.CompareAndSwap(true, false) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	return k.KeyValue.Update(ctx, key, value, rev)
}
