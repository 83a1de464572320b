package bus

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// A server's backups store is an object store in nats.go's format (its
// reads, GetInfo, GetBytes and List, are nats.go's) whose stream refuses
// Nats-Rollup: a rollup stored in a stream a role writes can be had
// published onto any subject (a direct get's reply), and "Nats-Rollup: all"
// on another server's store, or on the images store, would empty it. So
// objects are written here, by PutBackup and UpdateBackupMeta, the way
// nats.go writes them, but with no rollup on the meta: readers take the
// meta subject's last message.

// backupChunk is the size of one chunk, nats.go's default.
const backupChunk = 128 * 1024

// BackupsStreamConfig is the stream of server's backups store, kept on
// replicas nodes.
func BackupsStreamConfig(server string, replicas int) jetstream.StreamConfig {
	b := BackupsBucket(server)
	return jetstream.StreamConfig{
		Name: "OBJ_" + b, Description: "database backups of server " + server + ", gzip-compressed dumps",
		Subjects: []string{"$O." + b + ".C.>", "$O." + b + ".M.>"}, MaxBytes: -1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1), Discard: jetstream.DiscardNew,
		AllowRollup: false, AllowDirect: true,
	}
}

// EnsureBackupsStore makes server's backups store, or puts its stream's
// config back (rollups refused), and opens it. It is replicated as the
// commands stream is (`skein init --replicas N`): a backup outlives the
// loss of a NATS node as the commands do.
func EnsureBackupsStore(ctx context.Context, js jetstream.JetStream, server string) (jetstream.ObjectStore, error) {
	// Never fewer replicas than it has: a read that failed (a stream between
	// leaders) must not scale a replicated store down.
	replicas := 1
	// Read again while nobody answers (a loaded or electing server).
	st, err := retrying(ctx, func(ctx context.Context) (jetstream.Stream, error) { return js.Stream(ctx, StreamCommands) })
	switch {
	case err == nil:
		replicas = st.CachedInfo().Config.Replicas
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("bus: the backups store of %s: reading the commands stream's replicas: %w", server, err)
	}
	if own, err := js.Stream(ctx, "OBJ_"+BackupsBucket(server)); err == nil {
		replicas = max(replicas, own.CachedInfo().Config.Replicas)
	}
	if _, err := js.CreateOrUpdateStream(ctx, BackupsStreamConfig(server, replicas)); err != nil {
		return nil, fmt.Errorf("bus: the backups store of %s: %w", server, err)
	}
	return js.ObjectStore(ctx, BackupsBucket(server))
}

// PutBackup stores what r reads as the object meta names in bucket (a
// backups store), as nats.go's Put would but without a rollup, a chunk at
// a time; an object of that name already there is replaced for readers
// (its chunks stay). It ends only when r returns io.EOF: any other error,
// io.ErrUnexpectedEOF included, fails it and describes nothing.
func PutBackup(ctx context.Context, js jetstream.JetStream, bucket string, meta jetstream.ObjectMeta, r io.Reader) (*jetstream.ObjectInfo, error) {
	id := nuid.Next()
	chunks := "$O." + bucket + ".C." + id
	h := sha256.New()
	info := &jetstream.ObjectInfo{ObjectMeta: meta, Bucket: bucket, NUID: id}
	info.Opts = &jetstream.ObjectMetaOptions{ChunkSize: backupChunk}
	chunk := make([]byte, backupChunk)
	for {
		n, err := fill(r, chunk)
		if n > 0 {
			h.Write(chunk[:n])
			if _, perr := js.Publish(ctx, chunks, chunk[:n]); perr != nil {
				return nil, fmt.Errorf("storing %s: %w", meta.Name, perr)
			}
			info.Size += uint64(n)
			info.Chunks++
		}
		// Only r's own io.EOF is the end: a body cut short ends in
		// io.ErrUnexpectedEOF, and a stream without its end is not described.
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("storing %s: %w", meta.Name, err)
		}
	}
	info.Digest = "SHA-256=" + base64.URLEncoding.EncodeToString(h.Sum(nil))
	if err := publishBackupMeta(ctx, js, info); err != nil {
		return nil, err
	}
	return info, nil
}

// fill reads into p until it is full or r fails, and returns r's error as
// r returned it: io.ReadFull would make an io.ErrUnexpectedEOF of r's own
// (a body cut short) look like an end.
func fill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// UpdateBackupMeta changes the description, headers and metadata of the
// object name in bucket (a backups store), keeping its name and chunks.
func UpdateBackupMeta(ctx context.Context, js jetstream.JetStream, bucket, name string, meta jetstream.ObjectMeta) error {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return err
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return err
	}
	if meta.Name != name {
		return errors.New("bus: a backup keeps its name")
	}
	info.Description, info.Headers, info.Metadata = meta.Description, meta.Headers, meta.Metadata
	return publishBackupMeta(ctx, js, info)
}

// publishBackupMeta stores info on its meta subject, with no rollup.
func publishBackupMeta(ctx context.Context, js jetstream.JetStream, info *jetstream.ObjectInfo) error {
	info.ModTime = time.Time{}
	b, err := json.Marshal(info)
	if err != nil {
		return err
	}
	m := nats.NewMsg("$O." + info.Bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(info.Name)))
	m.Data = b
	if _, err := js.PublishMsg(ctx, m); err != nil {
		return fmt.Errorf("storing %s: %w", info.Name, err)
	}
	return nil
}

// ErrBackupDamaged is a backup whose chunks are not all there or not the
// ones its object describes.
var ErrBackupDamaged = errors.New("bus: the backup's chunks are not the ones it was stored with")

// GetBackup opens the object name of bucket (a backups store) for reading
// a chunk at a time, each fetched when the last one is read (a direct
// get), and returns its info. nats.go's Get has every chunk pushed to a
// consumer at once, which holds as much of the object as its reader is
// slower: hundreds of MiB of a large backup. The reader's last Read fails
// with ErrBackupDamaged unless it read the object's chunks, size and
// digest.
func GetBackup(ctx context.Context, js jetstream.JetStream, bucket, name string) (io.Reader, *jetstream.ObjectInfo, error) {
	obs, err := js.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, nil, err
	}
	info, err := obs.GetInfo(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if info.NUID == "" {
		return nil, nil, jetstream.ErrBadObjectMeta
	}
	st, err := js.Stream(ctx, "OBJ_"+bucket)
	if err != nil {
		return nil, nil, err
	}
	return &backupReader{ctx: ctx, st: st, info: info, subject: "$O." + bucket + ".C." + info.NUID, seq: 1, h: sha256.New()}, info, nil
}

// backupReader reads an object's chunks in order, one direct get each.
type backupReader struct {
	ctx     context.Context
	st      jetstream.Stream
	info    *jetstream.ObjectInfo
	subject string
	seq     uint64
	chunks  uint32
	size    uint64
	h       hash.Hash
	buf     []byte
	err     error
}

func (r *backupReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// next fetches the next chunk into r.buf, or checks the whole at the end.
func (r *backupReader) next() error {
	if r.chunks == r.info.Chunks {
		if r.size != r.info.Size || r.info.Digest != "SHA-256="+base64.URLEncoding.EncodeToString(r.h.Sum(nil)) {
			return fmt.Errorf("%w: %s", ErrBackupDamaged, r.info.Name)
		}
		return io.EOF
	}
	m, err := r.st.GetMsg(r.ctx, r.seq, jetstream.WithGetMsgSubject(r.subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("%w: %s has %d chunks of %d", ErrBackupDamaged, r.info.Name, r.chunks, r.info.Chunks)
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", r.info.Name, err)
	}
	r.seq, r.chunks, r.size = m.Sequence+1, r.chunks+1, r.size+uint64(len(m.Data))
	r.h.Write(m.Data)
	r.buf = m.Data
	return nil
}
