package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/container"
	"github.com/skeinhq/skein/internal/images"
	"github.com/skeinhq/skein/workers"
)

// check reads what the server lacks now.
func (a *Agent) check(ctx context.Context) []container.Lack {
	if a.cfg.Prereqs == nil {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	lacks := a.cfg.Prereqs.Check(cctx, []string{a.cfg.ServiceImage})
	a.mu.Lock()
	a.lacks, a.beats = lacks, 0
	a.fetchLacking()
	a.mu.Unlock()
	for _, l := range lacks {
		a.log.Warn().Str("lacks", l.What).Str("name", l.Name).Msg(a.fix(l))
	}
	return lacks
}

// ready refuses a container command the server cannot carry out, with the
// fix, before Incus is asked: what lacks stops every container, except an
// image, which stops only the containers made from it. What lacked at the last
// check is looked at again first: it may be there now.
func (a *Agent) ready(ctx context.Context, image string) error {
	a.mu.Lock()
	n := len(a.lacks)
	a.mu.Unlock()
	if n == 0 {
		return nil
	}
	// An image on its way from the bus is waited for, not refused.
	a.fmu.Lock()
	done := a.fetching[image]
	a.fmu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	var why []string
	for _, l := range a.check(ctx) {
		if l.Blocks() || l.Name == image {
			why = append(why, a.fix(l))
		}
	}
	if len(why) == 0 {
		return nil
	}
	return workers.Unready("server %s is degraded: %s", a.cfg.Name, strings.Join(why, "; "))
}

// imageRecipes are skein's images by alias, with the recipe that builds each.
var imageRecipes = map[string]string{"skein-service": "service", "skein-busybox": "app"}

// fix says what the server lacks and how to give it: the words `skein
// servers` shows and a refused command answers.
func (a *Agent) fix(l container.Lack) string {
	prepare := a.cfg.Prepare
	if prepare == "" {
		prepare = "skein agent --prepare"
	}
	state := "not found"
	a.fmu.Lock()
	fetching := a.fetching[l.Name] != nil
	a.fmu.Unlock()
	if l.What == "image" && fetching {
		return fmt.Sprintf("image %s not found: fetching it from the bus", l.Name)
	}
	if l.Detail != "" {
		state = "unusable (" + l.Detail + ")"
	}
	switch l.What {
	case "incus":
		return fmt.Sprintf("Incus is not reachable at %s (%s): install and start Incus, or pass --incus-socket", l.Name, l.Detail)
	case "project":
		return fmt.Sprintf("Incus project %s %s: run %s or pass --incus-project", l.Name, state, prepare)
	case "network":
		return fmt.Sprintf("network %s %s: run %s or pass --network", l.Name, state, prepare)
	case "pool":
		return fmt.Sprintf("storage pool %s %s: run %s or pass --pool", l.Name, state, prepare)
	case "image":
		if r, ok := imageRecipes[l.Name]; ok {
			return fmt.Sprintf("image %s %s: run skein images build %s (on this server, or on any machine with Incus that reaches the bus: the agent fetches it from there), or pass --service-image", l.Name, state, r)
		}
		return fmt.Sprintf("image %s %s: import it (`incus image list` shows what is there) or pass --service-image", l.Name, state)
	}
	return fmt.Sprintf("%s %s %s", l.What, l.Name, state)
}

// fetchLacking starts fetching from the bus each image the server lacks that
// is stored there, one fetch per image at a time. The caller holds a.mu.
func (a *Agent) fetchLacking() {
	if a.images == nil || a.runCtx == nil {
		return
	}
	a.fmu.Lock()
	defer a.fmu.Unlock()
	if a.fetching == nil {
		a.fetching = map[string]chan struct{}{}
	}
	for _, l := range a.lacks {
		if l.What != "image" || a.fetching[l.Name] != nil {
			continue
		}
		done := make(chan struct{})
		a.fetching[l.Name] = done
		go a.fetch(l.Name, done)
	}
}

// fetch imports image alias from the bus, when it is stored there.
func (a *Agent) fetch(alias string, done chan struct{}) {
	ctx := a.runCtx
	defer func() {
		a.fmu.Lock()
		delete(a.fetching, alias)
		a.fmu.Unlock()
		close(done)
	}()
	if info, err := images.Stored(ctx, a.images, alias); err != nil || info == nil {
		return // not there (yet): the next check looks again
	}
	start := time.Now()
	a.log.Info().Str("image", alias).Msg("fetching the image from the bus")
	fp, err := images.Fetch(ctx, a.conn.NC, a.images, alias, func(ctx context.Context, path string) (string, error) {
		return a.cfg.Prereqs.Import(ctx, alias, path)
	})
	if err != nil {
		a.log.Error().Err(err).Str("image", alias).Msg("fetching the image from the bus")
		return
	}
	a.log.Info().Str("image", alias).Str("fingerprint", fp).Dur("took", time.Since(start)).Msg("image imported from the bus")
	go a.check(ctx)
}

// imageStored says whether image alias is stored on the bus, sealed by
// whoever may store images, for this server to fetch (the fetch checks
// the seal again, and the image's sum).
func (a *Agent) imageStored(ctx context.Context, alias string) (bool, error) {
	if a.images == nil {
		return false, nil
	}
	info, err := images.Stored(ctx, a.images, alias)
	if err != nil || info == nil {
		return false, err
	}
	_, err = bus.OpenImageSeal(a.conn.NC, alias, info.Headers.Get(images.HeaderSeal))
	return err == nil, nil
}

// fetchImage imports image alias from the bus when it is stored there,
// joining a fetch already on its way: true when it was stored there (the
// caller looks for the image again).

func (a *Agent) fetchImage(ctx context.Context, alias string) (bool, error) {
	if a.images == nil || a.runCtx == nil {
		return false, nil
	}
	info, err := images.Stored(ctx, a.images, alias)
	if err != nil || info == nil {
		return false, err
	}
	a.fmu.Lock()
	if a.fetching == nil {
		a.fetching = map[string]chan struct{}{}
	}
	done := a.fetching[alias]
	if done == nil {
		done = make(chan struct{})
		a.fetching[alias] = done
		go a.fetch(alias, done)
	}
	a.fmu.Unlock()
	select {
	case <-done:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}
