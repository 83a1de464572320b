package main

import (
	"context"
	"fmt"
	"os"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/images"
	"github.com/skeinhq/skein/internal/incus"
)

// imageView is an image skein built, as `skein images` shows it.
type imageView struct {
	// Recipe names the recipe (app, service).
	Recipe string `json:"recipe"`
	// Alias is the image's alias in Incus.
	Alias string `json:"alias"`
	// Version is the recipe hash it was built from.
	Version string `json:"version"`
	// Current says whether that is this skein's recipe (false: build it again).
	Current bool `json:"current"`
	// Fingerprint is the image's fingerprint.
	Fingerprint string `json:"fingerprint"`
	// Size is its size in bytes.
	Size int64 `json:"size"`
	// Uploaded is when it was imported.
	Uploaded time.Time `json:"uploaded"`
}

func imagesCmd(g *globals) *cobra.Command {
	var socket string
	c := listCommand(g, listing[imageView]{
		use: "images", short: "List skein's images in this machine's Incus, with their recipe versions",
		headers: []string{"RECIPE", "ALIAS", "VERSION", "CURRENT", "FINGERPRINT", "SIZE", "UPLOADED"},
		local:   true,
		read: func(ctx context.Context, _ *cli, _ []string) ([]imageView, error) {
			return listImages(ctx, incus.New(socket))
		},
		row: func(v imageView) []string {
			cur := "yes"
			if !v.Current {
				cur = "no: skein images build " + v.Recipe
			}
			return []string{v.Recipe, v.Alias, orDash(v.Version), cur, v.Fingerprint[:12], fmt.Sprintf("%.1f MiB", float64(v.Size)/(1<<20)), v.Uploaded.Local().Format(time.DateTime)}
		},
		flags: func(c *cobra.Command) {
			c.PersistentFlags().StringVar(&socket, "incus-socket", "/var/lib/incus/unix.socket", "Incus API socket")
		},
	})
	c.Long = `List skein's images in this machine's Incus, with the version (recipe hash)
each was built from and whether it is this skein's. Build them with
` + "`skein images build app|service`."
	c.AddCommand(imagesBuildCmd(g, &socket), imagesPushCmd(g, &socket))
	return c
}

// listImages reads the images whose alias is a recipe's.
func listImages(ctx context.Context, cl *incus.Client) ([]imageView, error) {
	out := []imageView{}
	mirror := images.SystemMirror()
	for _, r := range images.Recipes {
		img, err := images.Current(ctx, cl, r.Alias)
		if err != nil {
			return nil, err
		}
		if img == nil {
			continue
		}
		want, _ := images.Hash(r, mirror)
		v := img.Properties[images.PropRecipe]
		out = append(out, imageView{Recipe: r.Name, Alias: r.Alias, Version: v, Current: v != "" && v == want, Fingerprint: img.Fingerprint, Size: img.Size, Uploaded: img.UploadedAt})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Recipe < out[j].Recipe })
	return out, nil
}

func imagesBuildCmd(g *globals, socket *string) *cobra.Command {
	var o images.Options
	var noPush bool
	c := &cobra.Command{
		Use:   "build app|service",
		Short: "Build an image from skein's recipe and import it into this machine's Incus (nothing to do when it is current)",
		Long: `Build an image from the recipe skein carries and import it into this machine's
Incus under its alias: app is skein-busybox (busybox, httpd on :80), service is
skein-service (Debian bookworm with systemd, nginx, haproxy, keepalived,
MariaDB, PostgreSQL and Consul). The image keeps its recipe's hash; a build
whose recipe did not change does nothing. It is then stored on the bus (once),
where agents whose server lacks it fetch it. Needs root; the service image
needs debootstrap, zstd and Debian's consul package on this machine.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := images.Lookup(args[0])
			if err != nil {
				return err
			}
			start := time.Now()
			o.Progress = func(s string) {
				fmt.Fprintf(os.Stderr, "images: [%5.1fs] %s: %s\n", time.Since(start).Seconds(), r.Name, s)
			}
			ic := incus.New(*socket)
			res, err := images.Build(cmd.Context(), ic, r, o)
			if err != nil {
				return err
			}
			if !noPush {
				// On the bus, agents whose server lacks the image import it from there.
				if stored, err := g.pushImage(cmd.Context(), ic, r.Alias); err != nil {
					o.Progress("not stored on the bus (" + err.Error() + "): `skein images push " + r.Name + "` does it once the bus is reachable")
				} else if stored {
					o.Progress("stored on the bus for the agents that lack it")
				} else {
					o.Progress("already on the bus")
				}
			}
			if g.output == "json" {
				return printJSON(res)
			}
			verb := "built"
			if !res.Built {
				verb = "current"
			}
			fmt.Printf("%s %s: recipe %s, image %s (%s)\n", verb, res.Alias, res.Recipe, res.Fingerprint[:12], time.Since(start).Round(100*time.Millisecond))
			return nil
		},
	}
	c.Flags().StringVar(&o.Cache, "cache", "/var/cache/skein", "where built images and the debootstrap base are kept")
	c.Flags().StringVar(&o.Mirror, "mirror", "", "Debian mirror (default: the system's apt mirror)")
	c.Flags().BoolVar(&o.Force, "force", false, "build even when the image is current")
	c.Flags().BoolVar(&noPush, "no-push", false, "do not store the image on the bus")
	g.addOutputFlag(c)
	return c
}

func imagesPushCmd(g *globals, socket *string) *cobra.Command {
	return &cobra.Command{
		Use:   "push app|service",
		Short: "Store this machine's image on the bus, where agents whose server lacks it fetch it (once: nothing when it is there)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := images.Lookup(args[0])
			if err != nil {
				return err
			}
			stored, err := g.pushImage(cmd.Context(), incus.New(*socket), r.Alias)
			if err != nil {
				return err
			}
			if stored {
				fmt.Printf("stored %s on the bus\n", r.Alias)
			} else {
				fmt.Printf("%s is on the bus already\n", r.Alias)
			}
			return nil
		},
	}
}

// pushImage stores the image alias of this machine's Incus in the bus's
// images store, unless it is there already.
func (g *globals) pushImage(ctx context.Context, ic *incus.Client, alias string) (bool, error) {
	cl, err := g.connect(ctx)
	if err != nil {
		return false, err
	}
	defer cl.close()
	obs, err := cl.conn.JS.ObjectStore(ctx, bus.ImagesBucket)
	if err != nil {
		return false, fmt.Errorf("the images store: %w", err)
	}
	return images.Push(ctx, cl.conn.NC, obs, ic, alias)
}
