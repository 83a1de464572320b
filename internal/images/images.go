// Package images builds skein's container images from the recipes it carries
// (recipes/NAME: a build script and the files it uses) and imports them into
// Incus under their alias, with the recipe's hash as property skein.recipe: a
// build whose recipe did not change does nothing.
package images

import (
	"bufio"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/skeinhq/skein/internal/incus"
)

//go:embed recipes
var recipes embed.FS

// PropRecipe is the image property holding the recipe hash it was built from.
const PropRecipe = "skein.recipe"

// Recipe is one image skein builds.
type Recipe struct {
	// Name is the recipe's name: app or service.
	Name string
	// Alias is the image's alias in Incus.
	Alias string
	// Description is the image's description.
	Description string
	// OS is its os property.
	OS string
	// Inputs are host files copied into the image: their content is part of the hash.
	Inputs []string
	// Templates are the image's file templates (path → template file).
	Templates map[string]string
}

// Recipes are the images skein builds, by name.
var Recipes = map[string]Recipe{
	"app": {Name: "app", Alias: "skein-busybox", Description: "skein app container: busybox, httpd on :80", OS: "busybox",
		Inputs: []string{"/bin/busybox"}},
	"service": {Name: "service", Alias: "skein-service", Description: "skein service container (Debian bookworm, systemd)", OS: "debian",
		Inputs:    []string{"/usr/bin/consul"},
		Templates: map[string]string{"/etc/hostname": "hostname.tpl", "/etc/hosts": "hosts.tpl"}},
}

// Lookup returns the recipe named name, or an error that lists them.
func Lookup(name string) (Recipe, error) {
	if r, ok := Recipes[name]; ok {
		return r, nil
	}
	var names []string
	for n := range Recipes {
		names = append(names, n)
	}
	sort.Strings(names)
	return Recipe{}, fmt.Errorf("no image recipe %q: use one of %s", name, strings.Join(names, ", "))
}

// Options are a build's settings.
type Options struct {
	// Cache keeps built tarballs and the debootstrap base (default /var/cache/skein).
	Cache string
	// Mirror is the Debian mirror (default: the system's, else deb.debian.org).
	Mirror string
	// Force rebuilds even when the image's recipe is current.
	Force bool
	// Progress is told each step.
	Progress func(string)
}

// Hash is the recipe's version: its files, the metadata skein writes, the
// host inputs and the mirror. The same hash means the same image.
func Hash(r Recipe, mirror string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s alias %s os %s desc %s mirror %s arch %s\n", r.Name, r.Alias, r.OS, r.Description, mirror, runtime.GOARCH)
	root := "recipes/" + r.Name
	var files []string
	if err := fs.WalkDir(recipes, root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, p)
		}
		return err
	}); err != nil {
		return "", err
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := recipes.ReadFile(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "file %s %d\n", f, len(b))
		h.Write(b)
	}
	for _, in := range r.Inputs {
		f, err := os.Open(in)
		if err != nil {
			return "", fmt.Errorf("the %s image needs %s on this machine: %w", r.Name, in, err)
		}
		fmt.Fprintf(h, "input %s\n", in)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	var keys []string
	for k := range r.Templates {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "template %s %s\n", k, r.Templates[k])
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// SystemMirror is the Debian mirror the system's apt uses, else deb.debian.org.
func SystemMirror() string {
	for _, f := range []string{"/etc/apt/sources.list.d/debian.sources", "/etc/apt/sources.list"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			fields := strings.Fields(line)
			if len(fields) >= 2 && fields[0] == "URIs:" {
				return fields[1]
			}
			if len(fields) >= 3 && fields[0] == "deb" && strings.HasPrefix(fields[1], "http") {
				return fields[1]
			}
		}
	}
	return "http://deb.debian.org/debian"
}

// Result says what a build did.
type Result struct {
	// Alias is the image's alias.
	Alias string `json:"alias"`
	// Recipe is the recipe hash.
	Recipe string `json:"recipe"`
	// Fingerprint is the image's fingerprint.
	Fingerprint string `json:"fingerprint"`
	// Built is false when the image was already current.
	Built bool `json:"built"`
	// Tarball is the unified image file in the cache.
	Tarball string `json:"tarball,omitempty"`
}

// Build makes the image of recipe r current in the Incus that cl speaks to:
// nothing when its alias already has this recipe's hash, else it builds (or
// takes from the cache) the unified tarball, imports it and moves the alias.
func Build(ctx context.Context, cl *incus.Client, r Recipe, o Options) (Result, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string) {}
	}
	if o.Cache == "" {
		o.Cache = "/var/cache/skein"
	}
	if o.Mirror == "" {
		o.Mirror = SystemMirror()
	}
	hash, err := Hash(r, o.Mirror)
	if err != nil {
		return Result{}, err
	}
	res := Result{Alias: r.Alias, Recipe: hash}
	if cur, err := Current(ctx, cl, r.Alias); err == nil && cur != nil && cur.Properties[PropRecipe] == hash && !o.Force {
		res.Fingerprint = cur.Fingerprint
		progress(fmt.Sprintf("%s is current (recipe %s)", r.Alias, hash))
		return res, nil
	} else if err != nil {
		return res, err
	}
	res.Built = true
	if err := os.MkdirAll(o.Cache, 0o755); err != nil {
		return res, err
	}
	res.Tarball = filepath.Join(o.Cache, fmt.Sprintf("skein-%s-%s.image.tar.%s", r.Name, hash, compression()))
	if _, err := os.Stat(res.Tarball); err != nil || o.Force {
		progress(fmt.Sprintf("building %s (recipe %s)", r.Alias, hash))
		if err := buildTarball(ctx, r, hash, o, res.Tarball, progress); err != nil {
			return res, err
		}
	} else {
		progress("tarball from the cache: " + res.Tarball)
	}
	progress("importing into Incus")
	if res.Fingerprint, err = Import(ctx, cl, r.Alias, r.Description, res.Tarball); err != nil {
		return res, err
	}
	// Earlier tarballs of this recipe are of no use now.
	olds, _ := filepath.Glob(filepath.Join(o.Cache, "skein-"+r.Name+"-*.image.tar.*"))
	for _, old := range olds {
		if old != res.Tarball {
			_ = os.Remove(old)
		}
	}
	progress(fmt.Sprintf("%s is %s", r.Alias, res.Fingerprint[:12]))
	return res, nil
}

// Current returns the image an alias points to, or nil when there is none.
func Current(ctx context.Context, cl *incus.Client, alias string) (*incus.Image, error) {
	a, err := cl.GetImageAlias(ctx, alias)
	if incus.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading image alias %s: %w", alias, err)
	}
	img, err := cl.GetImage(ctx, a.Target)
	if err != nil {
		return nil, fmt.Errorf("reading image %s: %w", a.Target, err)
	}
	return img, nil
}

// Import puts the unified image tarball into Incus (unless an image with its
// fingerprint is there already), points alias at it and deletes the image
// the alias pointed to before, when no instance uses it.
func Import(ctx context.Context, cl *incus.Client, alias, description, tarball string) (string, error) {
	fp, err := fileSHA256(tarball)
	if err != nil {
		return "", err
	}
	var old string
	if cur, err := Current(ctx, cl, alias); err != nil {
		return "", err
	} else if cur != nil {
		old = cur.Fingerprint
	}
	if _, err := cl.GetImage(ctx, fp); incus.IsNotFound(err) {
		f, err := os.Open(tarball)
		if err != nil {
			return "", err
		}
		got, err := cl.ImportImage(ctx, f)
		f.Close()
		if err != nil {
			return "", err
		}
		if got != fp {
			return "", fmt.Errorf("Incus fingerprinted the image %s, its file hashes to %s", got, fp)
		}
	} else if err != nil {
		return "", err
	}
	if err := cl.SetImageAlias(ctx, alias, fp, description); err != nil {
		return "", fmt.Errorf("pointing alias %s at %s: %w", alias, fp, err)
	}
	if old != "" && old != fp {
		_ = cl.DeleteImage(ctx, old) // in use by instances: Incus keeps it
	}
	return fp, nil
}

// compression is zst when zstd is installed, else gz.
func compression() string {
	if _, err := exec.LookPath("zstd"); err == nil {
		return "zst"
	}
	return "gz"
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// buildTarball runs the recipe's script into a fresh root file system and
// packs it with its metadata into a unified image tarball at out.
func buildTarball(ctx context.Context, r Recipe, hash string, o Options, out string, progress func(string)) error {
	if os.Geteuid() != 0 {
		return errors.New("building an image needs root (it makes a root file system with its owners and devices)")
	}
	work, err := os.MkdirTemp("/var/tmp", "skein-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	recipeDir := filepath.Join(work, "recipe")
	if err := extract("recipes/"+r.Name, recipeDir); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(recipeDir, "build.sh"), filepath.Join(work, "rootfs"), recipeDir, o.Cache)
	cmd.Env = append(os.Environ(), "MIRROR="+o.Mirror)
	if err := runLogged(cmd, progress); err != nil {
		return fmt.Errorf("the %s recipe failed: %w", r.Name, err)
	}
	if err := os.WriteFile(filepath.Join(work, "metadata.yaml"), []byte(Metadata(r, hash, time.Now())), 0o644); err != nil {
		return err
	}
	parts := []string{"metadata.yaml", "rootfs"}
	if len(r.Templates) > 0 {
		if err := os.MkdirAll(filepath.Join(work, "templates"), 0o755); err != nil {
			return err
		}
		for _, tpl := range r.Templates {
			b, err := recipes.ReadFile(path.Join("recipes", r.Name, "templates", tpl))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(work, "templates", tpl), b, 0o644); err != nil {
				return err
			}
		}
		parts = append(parts, "templates")
	}
	progress("packing the image")
	tmp := out + ".tmp"
	zip := "gzip"
	if compression() == "zst" {
		zip = "zstd -q -T0 -3" // several times faster than gzip on a service image
	}
	tar := exec.CommandContext(ctx, "tar", append([]string{"-C", work, "--numeric-owner", "-I", zip, "-cf", tmp}, parts...)...)
	if b, err := tar.CombinedOutput(); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("packing the image: %v: %s", err, b)
	}
	return os.Rename(tmp, out)
}

// runLogged runs cmd, telling its "step: " lines as progress and keeping the
// tail of its output for the error.
func runLogged(cmd *exec.Cmd, progress func(string)) error {
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return err
	}
	var tail []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			if step, ok := strings.CutPrefix(line, "step: "); ok {
				progress(step)
			}
			if tail = append(tail, line); len(tail) > 20 {
				tail = tail[1:]
			}
		}
	}()
	err := cmd.Wait()
	pw.Close()
	<-done
	if err != nil {
		return fmt.Errorf("%v: %s", err, strings.Join(tail, "\n"))
	}
	return nil
}

// extract writes the embedded directory dir to dst.
func extract(dir, dst string) error {
	return fs.WalkDir(recipes, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		target := filepath.Join(dst, strings.TrimPrefix(p, dir))
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		b, err := recipes.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if strings.HasSuffix(p, ".sh") {
			mode = 0o755
		}
		return os.WriteFile(target, b, mode)
	})
}

// Metadata renders an image's metadata.yaml: a pure function of the recipe,
// its hash and the build time.
func Metadata(r Recipe, hash string, at time.Time) string {
	arch := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}[runtime.GOARCH]
	if arch == "" {
		arch = runtime.GOARCH
	}
	var b strings.Builder
	fmt.Fprintf(&b, "architecture: %s\ncreation_date: %d\nproperties:\n", arch, at.Unix())
	fmt.Fprintf(&b, "  architecture: %s\n  description: %q\n  os: %s\n  release: skein\n  %s: %q\n", arch, r.Description, r.OS, PropRecipe, hash)
	if len(r.Templates) > 0 {
		b.WriteString("templates:\n")
		var paths []string
		for p := range r.Templates {
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			fmt.Fprintf(&b, "  %s:\n    when: [create, copy]\n    create_only: false\n    template: %s\n", p, r.Templates[p])
		}
	}
	return b.String()
}
