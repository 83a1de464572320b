//go:build e2e

package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// BenchmarkAddDBOn measures what the user waits for when adding a database
// and its user on a running MariaDB instance: from the start of `skein adddb
// --on` (a new process) until the new user's query in that database answers
// from another container (usable-ms), and until the command exits (cli-ms).
// Run with -benchtime 10x (go tool task bench:db); medians and p90s in ms.
func BenchmarkAddDBOn(b *testing.B) {
	must := func(args ...string) string {
		out, errOut, err := skein(args...)
		if err != nil {
			b.Fatalf("skein %v: %v\n%s%s", args, err, out, errOut)
		}
		return out
	}
	must("launch", "skein-service", "dbbc", "-s", "s2")
	defer skein("delete", "dbbc")
	if out, errOut, err := skeinIn("Bench-pw-1x\n", "adddb", "mysql", "s1", "bench0", "bench0", "-n", "mybench", "-a", "10.77.2.0/24", "-p", "-"); err != nil {
		b.Fatalf("adddb: %v %s %s", err, out, errOut)
	}
	defer skein("deldbinstance", "mybench", "--purge")
	host := ""
	for _, c := range listB(b) {
		if c.Name == "mybench" {
			host = c.IPv4
		}
	}
	var usable, cli []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		user := fmt.Sprintf("bench%d", i+1)
		// The client's option file is in place before the clock starts: the password is the test's.
		cnf := fmt.Sprintf("[client]\nhost=%s\nuser=%s\npassword=Bench-pw-1x\ndatabase=%s\n", host, user, user)
		cmd := fmt.Sprintf("cat > /root/%s.cnf <<'EOF'\n%sEOF", user, cnf)
		if out, err := inContainer("dbbc", "skein-s2", cmd); err != nil {
			b.Fatalf("%v %s", err, out)
		}
		b.StartTimer()
		u, c := timeToServe(b, []string{"adddb", "--on", "mybench", user, user, "-p", "Bench-pw-1x"}, func() bool {
			out, err := inContainer("dbbc", "skein-s2", "mariadb --defaults-file=/root/"+user+".cnf --batch --skip-column-names -e 'SELECT DATABASE()'")
			return err == nil && strings.TrimSpace(out) == user
		})
		usable, cli = append(usable, u), append(cli, c)
	}
	b.StopTimer()
	report(b, usable, "usable")
	report(b, cli, "cli")
	must("listdbs")
}
