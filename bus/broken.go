//go:build skeinbroken

package bus

import (
	"os"
	"strings"
)

// A broken build, for the soak's checker to catch (issue 13): with
// SKEIN_BROKEN=norevision the store's writes ignore the revision they read.
// Never built without the skeinbroken tag.
func init() {
	if strings.Contains(os.Getenv("SKEIN_BROKEN"), "norevision") {
		checkRevisions = false
	}
}
