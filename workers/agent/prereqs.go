package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/skeinhq/skein/internal/container"
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
			return fmt.Sprintf("image %s %s: run skein images build %s on this server, or pass --service-image", l.Name, state, r)
		}
		return fmt.Sprintf("image %s %s: import it (`incus image list` shows what is there) or pass --service-image", l.Name, state)
	}
	return fmt.Sprintf("%s %s %s", l.What, l.Name, state)
}
