package discovery

import "testing"

func TestHTTPTarget(t *testing.T) {
	cases := []struct{ raw, target, host string }{
		{"/", "http://10.77.1.5/", ""},
		{"/health?x=1", "http://10.77.1.5/health?x=1", ""},
		{"mywordpress.org", "http://10.77.1.5", "mywordpress.org"},
		{"mywordpress.org/login", "http://10.77.1.5/login", "mywordpress.org"},
		{"http://mywordpress.org:8080/x", "http://10.77.1.5:8080/x", "mywordpress.org:8080"},
		{"http://10.77.2.9:81/ok", "http://10.77.2.9:81/ok", ""},
		{"https://site.example/", "https://10.77.1.5/", "site.example"},
	}
	for _, tc := range cases {
		target, host, err := httpTarget(tc.raw, "10.77.1.5")
		if err != nil || target != tc.target || host != tc.host {
			t.Errorf("httpTarget(%q) = %q, %q, %v; want %q, %q", tc.raw, target, host, err, tc.target, tc.host)
		}
	}
	if _, _, err := httpTarget("http://", "10.77.1.5"); err == nil {
		t.Error("a URL without a host was accepted")
	}
}
