package incus

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// GetImageAlias resolves an image alias to its target fingerprint, e.g. to check an image exists before creating instances.
func (c *Client) GetImageAlias(ctx context.Context, name string) (*ImageAliasesEntry, error) {
	var a ImageAliasesEntry
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/images/aliases/"+url.PathEscape(name), nil, nil, &a); err != nil {
		return nil, err
	}
	return &a, nil
}

// GetImage fetches an image by fingerprint.
func (c *Client) GetImage(ctx context.Context, fingerprint string) (*Image, error) {
	var img Image
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/images/"+url.PathEscape(fingerprint), nil, nil, &img); err != nil {
		return nil, err
	}
	return &img, nil
}

// GetImages lists the images with their properties and aliases.
func (c *Client) GetImages(ctx context.Context) ([]Image, error) {
	var imgs []Image
	if _, err := c.queryStruct(ctx, http.MethodGet, "/1.0/images", url.Values{"recursion": {"1"}}, nil, &imgs); err != nil {
		return nil, err
	}
	return imgs, nil
}

// ImportImage uploads a unified image tarball (metadata.yaml, templates/,
// rootfs/) and returns its fingerprint once Incus has unpacked it.
func (c *Client) ImportImage(ctx context.Context, tarball io.Reader) (string, error) {
	// Streamed (chunked): the tarball is not held in memory.
	resp, err := c.send(ctx, http.MethodPost, "/1.0/images", nil, tarball, http.Header{"Content-Type": {"application/octet-stream"}})
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	env, err := parseResponse(resp)
	if err != nil {
		return "", fmt.Errorf("POST /1.0/images: %w", err)
	}
	if env.Type != AsyncResponse {
		return "", fmt.Errorf("incus: POST /1.0/images: expected an async response, got %q", env.Type)
	}
	var data APIOperation
	if err := json.Unmarshal(env.Metadata, &data); err != nil || data.ID == "" {
		return "", fmt.Errorf("incus: POST /1.0/images: no operation (%v)", err)
	}
	op := &Operation{c: c, data: data}
	if err := op.Wait(ctx); err != nil {
		return "", fmt.Errorf("importing the image: %w", err)
	}
	fp, _ := op.Get().Metadata["fingerprint"].(string)
	if fp == "" {
		return "", fmt.Errorf("incus: the image import answered no fingerprint")
	}
	return fp, nil
}

// SetImageAlias points alias at the image fingerprint, creating the alias or moving it.
func (c *Client) SetImageAlias(ctx context.Context, alias, fingerprint, description string) error {
	if _, err := c.GetImageAlias(ctx, alias); IsNotFound(err) {
		_, err := c.queryStruct(ctx, http.MethodPost, "/1.0/images/aliases", nil, map[string]string{"name": alias, "target": fingerprint, "description": description}, nil)
		return err
	} else if err != nil {
		return err
	}
	_, err := c.queryStruct(ctx, http.MethodPut, "/1.0/images/aliases/"+url.PathEscape(alias), nil, ImageAliasesEntryPut{Target: fingerprint, Description: description}, nil)
	return err
}

// DeleteImage deletes an image by fingerprint.
func (c *Client) DeleteImage(ctx context.Context, fingerprint string) error {
	op, err := c.queryOperation(ctx, http.MethodDelete, "/1.0/images/"+url.PathEscape(fingerprint), nil, nil)
	if err != nil {
		return err
	}
	return op.Wait(ctx)
}

// ExportImage streams a unified image's tarball (GET /1.0/images/<fp>/export);
// the caller closes it.
func (c *Client) ExportImage(ctx context.Context, fingerprint string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, "/1.0/images/"+url.PathEscape(fingerprint)+"/export", nil, nil, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 400 || isJSON(resp.Header) {
		defer resp.Body.Close()
		if _, err := parseResponse(resp); err != nil {
			return nil, fmt.Errorf("GET /1.0/images/%s/export: %w", fingerprint, err)
		}
		return nil, fmt.Errorf("GET /1.0/images/%s/export: not an image file", fingerprint)
	}
	if ct := resp.Header.Get("Content-Type"); strings.HasPrefix(ct, "multipart/") {
		resp.Body.Close()
		return nil, fmt.Errorf("image %s is a split image: skein stores unified ones", fingerprint)
	}
	return resp.Body, nil
}
