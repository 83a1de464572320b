//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// prometheus is a real Prometheus (Debian's package) scraping the test
// cluster's server and agents every second.
type prometheus struct {
	addr string
	proc *proc
}

func startPrometheus(t *testing.T) *prometheus {
	t.Helper()
	dir := t.TempDir()
	var agentsTargets []string
	for _, s := range servers {
		agentsTargets = append(agentsTargets, fmt.Sprintf("%q", metricsAddr[s.name]))
	}
	conf := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: skein-server
    static_configs:
      - targets: [%q]
  - job_name: skein-agent
    static_configs:
      - targets: [%s]
`, metricsAddr["server"], strings.Join(agentsTargets, ", "))
	path := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &prometheus{addr: fmt.Sprintf("127.0.0.1:%d", freePort())}
	p.proc = &proc{name: "prometheus", bin: "prometheus", args: []string{"--config.file=" + path, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + p.addr, "--log.level=warn"}}
	p.proc.start()
	t.Cleanup(p.proc.stop)
	eventually(t, 30*time.Second, func() bool {
		resp, err := httpClient.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, "Prometheus is not ready")
	return p
}

// query runs PromQL through Prometheus's HTTP API: each series's labels
// (k=v sorted, joined by commas; the metric's name left out) and value.
func (p *prometheus) query(q string) (map[string]float64, error) {
	resp, err := httpClient.Get("http://" + p.addr + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	if body.Status != "success" {
		return nil, fmt.Errorf("%s: %s", q, body.Error)
	}
	out := map[string]float64{}
	for _, r := range body.Data.Result {
		var keys []string
		for k, v := range r.Metric {
			if k != "__name__" {
				keys = append(keys, k+"="+v)
			}
		}
		s, _ := r.Value[1].(string)
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, err
		}
		out[strings.Join(sortedStrings(keys), ",")] = v
	}
	return out, nil
}

func sortedStrings(s []string) []string {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s
}

// A real Prometheus scrapes the server and the agents (--metrics): a PromQL
// query returns, by type, the number of commands the test sent; the server's
// gauges say the agents are up; an agent gives its load balancer's backends
// with haproxy's state; a path that is not /metrics is a plain 404.
func TestMetrics(t *testing.T) {
	dumpOnFailure(t)
	p := startPrometheus(t)
	const q = `sum by (type) (skein_commands_total{job="skein-agent",outcome="ok"})`
	// Every target scraped once before the baseline is read.
	eventually(t, 30*time.Second, func() bool {
		up, err := p.query(`up`)
		if err != nil || len(up) != 1+len(servers) {
			return false
		}
		for _, v := range up {
			if v != 1 {
				return false
			}
		}
		return true
	}, "Prometheus does not scrape the server and the three agents")
	before, err := p.query(q)
	if err != nil {
		t.Fatal(err)
	}
	cleanup(t, "met1", "met2")
	sent := map[string]int{}
	run := func(typ string, args ...string) {
		mustSkein(t, args...)
		sent[typ]++
	}
	run("container.launch", "launch", "skein-busybox", "met1", "-s", "s1")
	run("container.launch", "launch", "skein-busybox", "met2", "-s", "s2")
	run("service.add", "addservice", "met1", "web", "80")
	run("service.add", "addservice", "met1", "admin", "81")
	run("service.add", "addservice", "met2", "web", "80")
	run("container.stop", "stop", "met1")
	run("container.start", "start", "met1")
	run("container.delete", "delete", "met1")
	run("container.delete", "delete", "met2")
	var got map[string]float64
	eventually(t, 30*time.Second, func() bool {
		if got, err = p.query(q); err != nil {
			return false
		}
		for typ, n := range sent {
			k := "type=" + typ
			if got[k]-before[k] != float64(n) {
				return false
			}
		}
		return true
	}, "PromQL %s: before %v, after %v; sent %v", q, before, lazyString(func() string { return fmt.Sprint(got) }), sent)
	t.Logf("%s: sent %v, Prometheus counts the increase exactly", q, sent)

	// The server's gauges, from the records.
	ups, err := p.query(`skein_server_up{job="skein-server"}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range servers {
		if ups["instance="+metricsAddr["server"]+",job=skein-server,server="+s.name] != 1 {
			t.Errorf("skein_server_up of %s: %v", s.name, ups)
		}
	}
	if age, err := p.query(`max(skein_server_heartbeat_age_seconds)`); err != nil || len(age) != 1 || age[""] > 10 {
		t.Errorf("heartbeat age: %v %v", age, err)
	}
	if errs, err := p.query(`skein_records_read_errors`); err != nil || len(errs) != 1 {
		t.Errorf("records read errors: %v %v", errs, err)
	} else {
		for _, v := range errs {
			if v != 0 {
				t.Errorf("the server could not read %v record kinds", v)
			}
		}
	}
	// Latency histograms: the handler time of the launches.
	if h, err := p.query(`sum(skein_command_handler_seconds_count{type="container.launch"})`); err != nil || h[""] < 2 {
		t.Errorf("launch handler histogram count: %v %v", h, err)
	}
	// An agent's load balancer backends, with their state as haproxy runs them.
	t.Cleanup(func() { _, _, _ = skein("dellb", "metlb") })
	mustSkein(t, "addlb", "haproxy", "s1", "-n", "metlb")
	mustSkein(t, "addbackends", "metlb", "a:10.77.9.1:80", "b:10.77.9.2:80")
	var states map[string]float64
	eventually(t, 30*time.Second, func() bool {
		states, err = p.query(`skein_lb_backend_state{lb="metlb"}`)
		return err == nil && len(states) == 2
	}, "skein_lb_backend_state of metlb: %v", lazyString(func() string { return fmt.Sprint(states) }))
	t.Logf("metlb's backends as haproxy runs them: %v", states)
	resp, err := httpClient.Get("http://" + metricsAddr["s1"] + "/nope")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope on an agent's metrics address: %d, want 404", resp.StatusCode)
	}
}
