// Package consul is skein's adapter to the Consul endpoints: it writes the
// catalog (one synthetic node per container, as consul-esm does for external
// services) and reads it back. Every call tries the endpoints in turn, so one
// endpoint down does not stop publication.
package consul

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
)

// Meta keys on the nodes skein registers.
const (
	// MetaExternal marks a node that no Consul agent runs (consul-esm's convention).
	MetaExternal = "external-node"
	// MetaServer names the skein server that owns the node's container.
	MetaServer = "skein-server"
	// MetaKind is "container" or "adhoc".
	MetaKind = "skein-kind"
)

// Node is one container (or ad-hoc entry) with its services and checks.
type Node struct {
	// Name is the node name: the container's name.
	Name string
	// Address is the container's address, returned by DNS.
	Address string
	// Meta are node meta data.
	Meta map[string]string
	// Services are the node's services.
	Services []Service
	// Checks are node-level checks: any critical one hides every service of the node.
	Checks []Check
}

// Service is one service of a node.
type Service struct {
	// Name is the service name.
	Name string
	// Port is its port.
	Port int
	// Tags are its tags.
	Tags []string
}

// Check is one node-level check, run by skein, whose status skein writes.
type Check struct {
	// ID is unique within the node.
	ID string
	// Name is shown in the UI.
	Name string
	// Status is passing or critical.
	Status string
	// Output says why.
	Output string
	// TCP or HTTP describes the check for the UI.
	TCP, HTTP string
	// TLSSkipVerify says an https check does not verify the certificate.
	TLSSkipVerify bool
	// Interval and Timeout describe the check for the UI.
	Interval, Timeout string
}

// Entry is one service instance as the catalog reports it, with its health.
type Entry struct {
	// Service is the service name.
	Service string `json:"service"`
	// Node is the node (container) name.
	Node string `json:"node"`
	// Address is the instance's address.
	Address string `json:"address"`
	// Port is the instance's port.
	Port int `json:"port"`
	// Tags are its tags.
	Tags []string `json:"tags"`
	// Health is passing, warning or critical: the worst of its checks.
	Health string `json:"health"`
	// Checks are the checks that apply to it.
	Checks []CheckEntry `json:"checks"`
}

// CheckEntry is a check as the catalog reports it.
type CheckEntry struct {
	// Name is the check's name.
	Name string `json:"name"`
	// Status is its status.
	Status string `json:"status"`
	// Output is its last output.
	Output string `json:"output,omitempty"`
}

// Client reaches the catalog through whichever endpoint answers.
type Client struct {
	addrs func() []string
	token func() string
	mu    sync.Mutex
	last  string
	http  *http.Client
}

// New returns a client over the endpoint addresses (host:port) that addrs
// reports, anonymous: it may read what the endpoints' anonymous policy allows.
func New(addrs func() []string) *Client {
	return &Client{addrs: addrs, token: func() string { return "" }, http: &http.Client{Timeout: 5 * time.Second}}
}

// WithToken returns a client that presents the ACL token token reports.
func (c *Client) WithToken(token func() string) *Client {
	return &Client{addrs: c.addrs, token: token, http: c.http}
}

// ErrNoEndpoint means no endpoint is defined yet.
var ErrNoEndpoint = errors.New("no consul endpoint")

// do runs f against the last endpoint that answered, then the others.
func (c *Client) do(ctx context.Context, f func(*api.Client) error) error {
	// A copy: the sort below must not reorder the caller's slice.
	addrs := append([]string(nil), c.addrs()...)
	if len(addrs) == 0 {
		return ErrNoEndpoint
	}
	c.mu.Lock()
	last := c.last
	c.mu.Unlock()
	sort.SliceStable(addrs, func(i, j int) bool { return addrs[i] == last && addrs[j] != last })
	var errs []error
	for _, a := range addrs {
		cl, err := api.NewClient(&api.Config{Address: a, HttpClient: c.http, Token: c.token()})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := f(cl); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a, err))
			continue
		}
		c.mu.Lock()
		c.last = a
		c.mu.Unlock()
		return nil
	}
	return fmt.Errorf("no consul endpoint answered: %w", errors.Join(errs...))
}

func wopts(ctx context.Context) *api.WriteOptions { return (&api.WriteOptions{}).WithContext(ctx) }
func qopts(ctx context.Context) *api.QueryOptions { return (&api.QueryOptions{}).WithContext(ctx) }

// registration is the catalog's register body, written by hand: the api
// package's types carry fields that older Consul servers (1.8) refuse.
type registration struct {
	Node           string
	Address        string
	NodeMeta       map[string]string `json:",omitempty"`
	Service        *regService       `json:",omitempty"`
	Checks         []regCheck        `json:",omitempty"`
	SkipNodeUpdate bool              `json:",omitempty"`
}

type regService struct {
	ID      string
	Service string
	Address string
	Port    int
	Tags    []string `json:",omitempty"`
}

type regCheck struct {
	Node       string
	CheckID    string
	Name       string
	Status     string
	Output     string         `json:",omitempty"`
	Definition map[string]any `json:",omitempty"`
}

func (c *Client) register(ctx context.Context, cl *api.Client, r registration) error {
	_, err := cl.Raw().Write("/v1/catalog/register", r, nil, wopts(ctx))
	return err
}

// Register writes a node with all its services and checks, then removes the
// services and checks the catalog still had for it that n no longer has. It
// never deregisters the node first, so its services do not blink out of DNS.
func (c *Client) Register(ctx context.Context, n Node) error {
	return c.do(ctx, func(cl *api.Client) error {
		base := registration{Node: n.Name, Address: n.Address, NodeMeta: n.Meta, Checks: regChecks(n.Name, n.Checks)}
		if err := c.register(ctx, cl, base); err != nil {
			return err
		}
		keepSvc := map[string]bool{}
		for _, s := range n.Services {
			keepSvc[s.Name] = true
			r := registration{Node: n.Name, Address: n.Address, SkipNodeUpdate: true,
				Service: &regService{ID: s.Name, Service: s.Name, Address: n.Address, Port: s.Port, Tags: s.Tags}}
			if err := c.register(ctx, cl, r); err != nil {
				return err
			}
		}
		keepCheck := map[string]bool{}
		for _, ch := range n.Checks {
			keepCheck[ch.ID] = true
		}
		node, _, err := cl.Catalog().Node(n.Name, qopts(ctx))
		if err != nil {
			return err
		}
		if node != nil {
			for id := range node.Services {
				if !keepSvc[id] {
					if _, err := cl.Catalog().Deregister(&api.CatalogDeregistration{Node: n.Name, ServiceID: id}, wopts(ctx)); err != nil {
						return err
					}
				}
			}
		}
		checks, _, err := cl.Health().Node(n.Name, qopts(ctx))
		if err != nil {
			return err
		}
		for _, ch := range checks {
			if !keepCheck[ch.CheckID] {
				if _, err := cl.Catalog().Deregister(&api.CatalogDeregistration{Node: n.Name, CheckID: ch.CheckID}, wopts(ctx)); err != nil {
					return err
				}
			}
		}
		return nil
	})
}

// UpdateChecks writes the checks' statuses of a registered node.
func (c *Client) UpdateChecks(ctx context.Context, node, address string, checks []Check) error {
	return c.do(ctx, func(cl *api.Client) error {
		return c.register(ctx, cl, registration{Node: node, Address: address, SkipNodeUpdate: true, Checks: regChecks(node, checks)})
	})
}

func regChecks(node string, checks []Check) []regCheck {
	var out []regCheck
	for _, ch := range checks {
		def := map[string]any{}
		if ch.TCP != "" {
			def["TCP"] = ch.TCP
		}
		if ch.HTTP != "" {
			def["HTTP"] = ch.HTTP
		}
		if ch.TLSSkipVerify {
			def["TLSSkipVerify"] = true
		}
		if ch.Interval != "" {
			def["Interval"] = ch.Interval
		}
		if ch.Timeout != "" {
			def["Timeout"] = ch.Timeout
		}
		out = append(out, regCheck{Node: node, CheckID: ch.ID, Name: ch.Name, Status: ch.Status, Output: ch.Output, Definition: def})
	}
	return out
}

// Deregister removes a node and everything on it.
func (c *Client) Deregister(ctx context.Context, node string) error {
	return c.do(ctx, func(cl *api.Client) error {
		_, err := cl.Catalog().Deregister(&api.CatalogDeregistration{Node: node}, wopts(ctx))
		return err
	})
}

// Nodes lists the nodes whose meta has every key and value of meta, each
// with the IDs of its services, sorted.
func (c *Client) Nodes(ctx context.Context, meta map[string]string) (map[string][]string, error) {
	var out map[string][]string
	err := c.do(ctx, func(cl *api.Client) error {
		q := qopts(ctx)
		q.NodeMeta = meta
		nodes, _, err := cl.Catalog().Nodes(q)
		if err != nil {
			return err
		}
		out = map[string][]string{}
		for _, n := range nodes {
			// A server restarted after a write it had not kept has the node, not its services.
			cn, _, err := cl.Catalog().Node(n.Node, qopts(ctx))
			if err != nil {
				return err
			}
			ids := []string{}
			if cn != nil {
				for id := range cn.Services {
					ids = append(ids, id)
				}
			}
			sort.Strings(ids)
			out[n.Node] = ids
		}
		return nil
	})
	return out, err
}

// NodeChecks lists the nodes whose meta has every key and value of meta, with
// their address and their checks as the catalog has them: status, output and
// definition (Consul gives durations back in Go's form: "1m" as "1m0s").
// Services are left out.
func (c *Client) NodeChecks(ctx context.Context, meta map[string]string) ([]Node, error) {
	var out []Node
	err := c.do(ctx, func(cl *api.Client) error {
		q := qopts(ctx)
		q.NodeMeta = meta
		nodes, _, err := cl.Catalog().Nodes(q)
		if err != nil {
			return err
		}
		checks, _, err := cl.Health().State(api.HealthAny, q)
		if err != nil {
			return err
		}
		byName := map[string]int{}
		out = out[:0]
		for _, n := range nodes {
			byName[n.Node] = len(out)
			out = append(out, Node{Name: n.Node, Address: n.Address, Meta: n.Meta})
		}
		for _, ch := range checks {
			i, ok := byName[ch.Node]
			if !ok {
				continue // a node registered between the two reads
			}
			d := ch.Definition
			out[i].Checks = append(out[i].Checks, Check{ID: ch.CheckID, Name: ch.Name, Status: ch.Status, Output: ch.Output,
				TCP: d.TCP, HTTP: d.HTTP, TLSSkipVerify: d.TLSSkipVerify, Interval: duration(d.IntervalDuration), Timeout: duration(d.TimeoutDuration)})
		}
		return nil
	})
	return out, err
}

func duration(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

// Entries lists every service instance the catalog knows, with its health.
func (c *Client) Entries(ctx context.Context) ([]Entry, error) {
	var out []Entry
	err := c.do(ctx, func(cl *api.Client) error {
		out = out[:0]
		svcs, _, err := cl.Catalog().Services(qopts(ctx))
		if err != nil {
			return err
		}
		names := make([]string, 0, len(svcs))
		for n := range svcs {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			entries, _, err := cl.Health().Service(name, "", false, qopts(ctx))
			if err != nil {
				return err
			}
			for _, e := range entries {
				en := Entry{Service: name, Node: e.Node.Node, Address: e.Service.Address, Port: e.Service.Port, Tags: e.Service.Tags, Health: e.Checks.AggregatedStatus()}
				if en.Address == "" {
					en.Address = e.Node.Address
				}
				for _, ch := range e.Checks {
					en.Checks = append(en.Checks, CheckEntry{Name: ch.Name, Status: ch.Status, Output: ch.Output})
				}
				out = append(out, en)
			}
		}
		return nil
	})
	return out, err
}

// Leader returns the raft leader's address as the endpoint at addr sees it, "" when there is none.
func Leader(ctx context.Context, addr string) (string, error) {
	cl, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Timeout: 3 * time.Second}})
	if err != nil {
		return "", err
	}
	return cl.Status().LeaderWithQueryOptions(qopts(ctx))
}

// Voters returns the raft voters as the endpoint at addr sees them, by node
// name; token may read the operator's state.
func Voters(ctx context.Context, addr, token string) ([]string, error) {
	cl, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Timeout: 3 * time.Second}, Token: token})
	if err != nil {
		return nil, err
	}
	cfg, err := cl.Operator().RaftGetConfiguration(qopts(ctx))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range cfg.Servers {
		if s.Voter {
			out = append(out, s.Node)
		}
	}
	sort.Strings(out)
	return out, nil
}

// AnonymousToken is the accessor of Consul's anonymous token: the one a
// request without a token (and DNS) is held to.
const AnonymousToken = "00000000-0000-0000-0000-000000000002"

// Policy is an ACL policy: its name and its rules (HCL).
type Policy struct {
	// Name identifies the policy.
	Name string
	// Rules are the policy's rules.
	Rules string
}

// ACL manages the endpoints' ACL policies and tokens as the holder of the
// management token, through the endpoint at one address.
type ACL struct {
	cl *api.Client
}

// NewACL returns the ACL manager of the endpoint at addr (host:port) for the
// holder of the management token mgmt.
func NewACL(addr, mgmt string) (*ACL, error) {
	cl, err := api.NewClient(&api.Config{Address: addr, HttpClient: &http.Client{Timeout: 5 * time.Second}, Token: mgmt})
	if err != nil {
		return nil, err
	}
	return &ACL{cl: cl}, nil
}

// EnsurePolicy creates the policy, or gives the one of that name these rules.
func (a *ACL) EnsurePolicy(ctx context.Context, p Policy) error {
	var list []struct{ ID, Name, Description string }
	if _, err := a.cl.Raw().Query("/v1/acl/policies", &list, qopts(ctx)); err != nil {
		return fmt.Errorf("listing ACL policies: %w", err)
	}
	body := map[string]string{"Name": p.Name, "Rules": p.Rules, "Description": "skein"}
	path := "/v1/acl/policy"
	for _, have := range list {
		if have.Name == p.Name {
			path += "/" + have.ID
			body["ID"] = have.ID
		}
	}
	if _, err := a.cl.Raw().Write(path, body, nil, wopts(ctx)); err != nil {
		return fmt.Errorf("writing ACL policy %s: %w", p.Name, err)
	}
	return nil
}

// TokenExists reports whether the token with that accessor exists.
func (a *ACL) TokenExists(ctx context.Context, accessor string) (bool, error) {
	var tok map[string]any
	_, err := a.cl.Raw().Query("/v1/acl/token/"+accessor, &tok, qopts(ctx))
	if err == nil {
		return tok != nil, nil
	}
	var se api.StatusError
	if errors.As(err, &se) && (se.Code == http.StatusNotFound || se.Code == http.StatusForbidden) {
		return false, nil // 1.8 answers 403 "ACL not found" for an unknown accessor
	}
	if strings.Contains(err.Error(), "ACL not found") || strings.Contains(err.Error(), "404") {
		return false, nil
	}
	return false, err
}

// EnsureToken creates the token with the accessor and secret given, held to
// the policy named policy, or gives it that policy when it exists. With the
// anonymous token's accessor (and no secret) it sets what anonymous requests
// and DNS may do.
func (a *ACL) EnsureToken(ctx context.Context, accessor, secret, description, policy string) error {
	body := map[string]any{"AccessorID": accessor, "Description": description, "Policies": []map[string]string{{"Name": policy}}}
	exists, err := a.TokenExists(ctx, accessor)
	if err != nil {
		return err
	}
	path := "/v1/acl/token"
	if exists {
		path += "/" + accessor
	} else if secret != "" {
		body["SecretID"] = secret
	}
	if _, err := a.cl.Raw().Write(path, body, nil, wopts(ctx)); err != nil {
		return fmt.Errorf("writing ACL token %s: %w", description, err)
	}
	return nil
}

// DeleteToken deletes the token with that accessor; a missing one is no error.
func (a *ACL) DeleteToken(ctx context.Context, accessor string) error {
	if _, err := a.cl.Raw().Delete("/v1/acl/token/"+accessor, qopts(ctx)); err != nil {
		if ok, _ := a.TokenExists(ctx, accessor); !ok {
			return nil
		}
		return fmt.Errorf("deleting ACL token %s: %w", accessor, err)
	}
	return nil
}
