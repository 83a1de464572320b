package incus

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
)

// InstanceFileArgs describes a file to write with CreateInstanceFile.
type InstanceFileArgs struct {
	// Content is the file body (the symlink target for symlinks, ignored for directories).
	Content io.Reader
	// UID owns the new file (0 is root); Incus applies ownership only when it creates the file.
	UID int64
	// GID owns the new file (0 is root); Incus applies ownership only when it creates the file.
	GID int64
	// Mode is the permission bits of a new file; 0 leaves the server default, and existing files keep theirs.
	Mode os.FileMode
	// Type is "file" (default), "directory" or "symlink".
	Type string
	// WriteMode is "overwrite" (default) or "append".
	WriteMode string
}

// CreateInstanceFile writes a file into the instance (POST /1.0/instances/<name>/files?path=...); the instance need not be running for containers.
func (c *Client) CreateInstanceFile(ctx context.Context, name, filePath string, args InstanceFileArgs) error {
	h := http.Header{}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("X-Incus-uid", strconv.FormatInt(args.UID, 10))
	h.Set("X-Incus-gid", strconv.FormatInt(args.GID, 10))
	if args.Mode != 0 {
		h.Set("X-Incus-mode", fmt.Sprintf("%04o", args.Mode.Perm()))
	}
	if args.Type != "" {
		h.Set("X-Incus-type", args.Type)
	}
	if args.WriteMode != "" {
		h.Set("X-Incus-write", args.WriteMode)
	}
	resp, err := c.send(ctx, http.MethodPost, instancePath(name, "files"), url.Values{"path": {filePath}}, args.Content, h)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := parseResponse(resp); err != nil {
		return fmt.Errorf("POST %s %s: %w", instancePath(name, "files"), filePath, err)
	}
	return nil
}

// GetInstanceFile reads a regular file (or a symlink's target path) from the instance; directories are refused.
func (c *Client) GetInstanceFile(ctx context.Context, name, filePath string) ([]byte, error) {
	data, h, err := c.getRaw(ctx, instancePath(name, "files"), url.Values{"path": {filePath}})
	if err != nil {
		return nil, err
	}
	if t := h.Get("X-Incus-type"); t == "directory" {
		return nil, fmt.Errorf("incus: %s in instance %s is a directory", filePath, name)
	}
	return data, nil
}

// GetInstanceFileReader opens a regular file of the instance for reading as
// it arrives, never held whole: the caller closes the reader. size is its
// length, -1 when Incus does not tell. Anything Incus does not say is a
// regular file (X-Incus-type: file) is refused: a directory's listing or a
// symlink's target path is not the file's content.
func (c *Client) GetInstanceFileReader(ctx context.Context, name, filePath string) (io.ReadCloser, int64, error) {
	p := instancePath(name, "files")
	resp, err := c.send(ctx, http.MethodGet, p, url.Values{"path": {filePath}}, nil, nil)
	if err != nil {
		return nil, 0, err
	}
	if resp.StatusCode >= 400 || isJSON(resp.Header) || resp.Header.Get("X-Incus-type") == "directory" {
		defer resp.Body.Close()
		if _, err := parseResponse(resp); err != nil {
			return nil, 0, fmt.Errorf("GET %s: %w", p, err)
		}
		// A JSON answer that is no error is a directory's listing.
		return nil, 0, fmt.Errorf("incus: %s in instance %s is a directory", filePath, name)
	}
	if t := resp.Header.Get("X-Incus-type"); t != "file" {
		resp.Body.Close()
		return nil, 0, fmt.Errorf("incus: %s in instance %s is not a regular file (type %q)", filePath, name, t)
	}
	return resp.Body, resp.ContentLength, nil
}
