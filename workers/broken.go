//go:build skeinbroken

package workers

import (
	"os"
	"strings"
)

// A broken build, for the soak's checker to catch (issue 13): with
// SKEIN_BROKEN=nolock commands on one resource are no longer serialised.
// Never built without the skeinbroken tag.
func init() {
	if strings.Contains(os.Getenv("SKEIN_BROKEN"), "nolock") {
		lockResources = false
	}
}
