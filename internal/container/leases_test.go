package container

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"testing"
	"time"
)

func TestParseLeases(t *testing.T) {
	data := []byte(`1796596000 10:66:6A:1e:bc:d2 10.77.2.174 web1 ff:6a:1e:bc:d2:00:01
0 10:66:6a:00:00:02 10.77.2.60 * *
duid 00:01:00:01:2c:aa:bb:cc:10:66:6a:00:00:01
1796596001 10:66:6a:00:00:03 fd42::5 web3 *
1796596002 10:66:6a:00:00
1796596003 10:66:6a:00:00:04
`)
	want := map[string]lease{
		"10:66:6a:1e:bc:d2": {expiry: "1796596000", ip: "10.77.2.174"},
		"10:66:6a:00:00:02": {expiry: "0", ip: "10.77.2.60"},
	}
	if got := parseLeases(data); !reflect.DeepEqual(got, want) {
		t.Errorf("parseLeases = %v, want %v", got, want)
	}
}

func TestGrantedSurvivesATruncatedRead(t *testing.T) {
	was := map[string]lease{"a": {"1", "10.0.0.1"}, "b": {"1", "10.0.0.2"}}
	if got := granted(was, map[string]lease{}); len(got) != 0 {
		t.Errorf("an empty read granted %v", got)
	}
	got := granted(was, map[string]lease{"a": {"1", "10.0.0.1"}, "b": {"2", "10.0.0.2"}, "c": {"2", "10.0.0.3"}})
	sort.Strings(got)
	if !reflect.DeepEqual(got, []string{"b", "c"}) {
		t.Errorf("granted = %v, want the renewed b and the new c", got)
	}
	if got := granted(was, map[string]lease{"b": {"2", "10.0.0.2"}}); len(got) != 0 {
		t.Errorf("the same lease read again granted %v", got)
	}
}

// TestWatchLeasesTellsWhatDnsmasqWrites: dnsmasq truncates its leases file
// and writes it again in place as it grants a lease.
func TestWatchLeasesTellsWhatDnsmasqWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "dnsmasq.leases")
	old := "1796596000 10:66:6a:00:00:01 10.77.2.50 a *\n"
	if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := watchLeases(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(old+"1796596100 10:66:6a:00:00:02 10.77.2.51 b *\n"), 0); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-ch:
		if !reflect.DeepEqual(got, []string{"10:66:6a:00:00:02"}) {
			t.Errorf("told %v, want only the new lease", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the new lease was not told")
	}
	cancel()
	select {
	case _, open := <-ch:
		for open {
			_, open = <-ch
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the channel was not closed when ctx ended")
	}
}
