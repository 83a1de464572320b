package validate

import (
	"errors"
	"regexp"
	"strings"
	"testing"
)

func TestKinds(t *testing.T) {
	long := strings.Repeat("a", 64)
	tests := []struct {
		kind *Kind
		good []string
		bad  []string
	}{
		{Name, []string{"web", "c1", "a-b-c", strings.Repeat("a", 63)}, []string{"", "1web", "web_1", "web.1", "-web", "we b", long, "web\n"}},
		{Ident, []string{"web1", "10-77-1-5-80", "a_b"}, []string{"", "_a", "a.b", "a b", "a;b", long}},
		{Service, []string{"wordpress", "0pub", "a-b"}, []string{"a_b", "a.b", "", long}},
		{Host, []string{"mywordpress.org", "a", "x-1.example.com", "blog.service.consul"}, []string{"", "evil.test; location /pwn", "-a.org", "a-.org", "a..org", "a.org.", "a_b.org", "é.org", strings.Repeat("a", 64) + ".org", strings.Repeat("abcdefgh.", 29) + "org"}},
		{IPv4, []string{"10.77.1.5", "0.0.0.0", "255.255.255.255"}, []string{"10.77.1", "10.77.1.256", "010.77.1.5", "::1", "10.77.1.5 ", "a.b.c.d"}},
		{AddrPort, []string{"10.77.1.10:8600", "1.2.3.4:1"}, []string{"10.77.1.10", "10.77.1.10:0", "10.77.1.10:65536", "10.77.1.10:53\n  program x", "host:53"}},
		{BackendHost, []string{"10.77.1.5", "wordpress.service.consul"}, []string{"blog.example.org", "10.77.1.500", "x.service.consul.evil", "a b.service.consul"}},
		{Duration, []string{"500ms", "10s", "1m"}, []string{"10", "1h", "-1s", "999999999s"}},
		{Tag, []string{"primary", "v=1", "a:b"}, []string{"a b", "", "a\nb"}},
		{CheckURL, []string{"/health", "mywordpress.org", "http://10.77.1.5:8080/x", "https://a.test/h?q=1"}, []string{"ftp://a.test/", "http://a b/", "http://a.test:99999/", "", "http://exa_mple.org/"}},
		{WGKey, []string{"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=", "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw="}, []string{"", "forged", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dh=", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg", "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n"}},
		{Text, []string{"leastconn", "10.77.1.10:8600,10.77.2.20:8600", ""}, []string{"a\nb", "a\x00b"}},
	}
	for _, tc := range tests {
		t.Run(tc.kind.Name, func(t *testing.T) {
			for _, s := range tc.good {
				if err := tc.kind.Check(s); err != nil {
					t.Errorf("%q refused: %v", s, err)
				}
			}
			for _, s := range tc.bad {
				err := tc.kind.Check(s)
				if err == nil {
					t.Errorf("%q accepted", s)
					continue
				}
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "") {
					t.Errorf("%q: %v does not wrap ErrInvalid", s, err)
				}
			}
		})
	}
}

func TestStructWalksTaggedFields(t *testing.T) {
	type backend struct {
		Name string `json:"name" valid:"ident"`
		Host string `json:"host" valid:"backendhost"`
	}
	type lb struct {
		Name      string    `json:"name" valid:"name"`
		Resolvers []string  `json:"resolvers" valid:"addrport"`
		Backends  []backend `json:"backends"`
		Note      string    `json:"note"`
		TLS       *struct {
			Key string `json:"key" valid:"ident"`
		} `json:"tls"`
	}
	ok := lb{Name: "ha1", Resolvers: []string{"10.77.1.10:8600"}, Backends: []backend{{Name: "web1", Host: "10.77.1.5"}}, Note: "any\nthing"}
	if err := Struct(ok); err != nil {
		t.Fatalf("valid struct refused: %v", err)
	}
	if err := Struct(&ok); err != nil {
		t.Fatalf("pointer to a valid struct refused: %v", err)
	}
	bad := ok
	bad.Backends = []backend{{Name: "web1", Host: "10.77.1.5"}, {Name: "x", Host: "10.77.1.5\n  program x"}}
	err := Struct(bad)
	if err == nil || !strings.Contains(err.Error(), "/backends/1/host") {
		t.Errorf("bad backend host: %v, want an error naming /backends/1/host", err)
	}
	bad = ok
	bad.Resolvers = []string{"10.77.1.10:8600", "x"}
	if err := Struct(bad); err == nil || !strings.Contains(err.Error(), "/resolvers/1") {
		t.Errorf("bad resolver: %v", err)
	}
}

// TestStructRefusesEmptyListElements: a field may be left empty, an element
// of a list may not (an empty resolver rendered "resolver  valid=1s").
func TestStructRefusesEmptyListElements(t *testing.T) {
	type rec struct {
		Resolvers []string `valid:"addrport"`
		Optional  string   `valid:"addrport"`
	}
	if err := Struct(rec{Resolvers: []string{"10.0.0.1:53"}}); err != nil {
		t.Errorf("a full list and an empty field: %v", err)
	}
	if err := Struct(rec{Resolvers: []string{"10.0.0.1:53", ""}}); err == nil || !strings.Contains(err.Error(), "/Resolvers/1") {
		t.Errorf("an empty element: %v, want an error naming /Resolvers/1", err)
	}
}

// TestEveryPatternCompiles: patterns compile on first use, so a bad one would
// otherwise only show when a user first gives a string of its kind.
func TestEveryPatternCompiles(t *testing.T) {
	for name, k := range kinds {
		if _, err := regexp.Compile(k.Pattern); err != nil {
			t.Errorf("kind %s: %v", name, err)
		}
	}
}
