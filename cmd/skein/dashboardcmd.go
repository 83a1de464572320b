package main

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/spf13/cobra"

	"github.com/skeinhq/skein/bus"
	"github.com/skeinhq/skein/internal/validate"
)

// dashboardCmd prints a login link to a dashboard served beyond loopback:
// a token signed, here, with the user's credentials, which the server checks
// against the bus's authority. Nothing goes over the bus; the seed stays.
func dashboardCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "dashboard URL",
		Short: "Print a link that logs in to the dashboard at URL (served beyond loopback)",
		Long: `Print a link that logs in to the dashboard at URL, e.g. https://s1.example:8474/.

A dashboard on loopback needs no login. Beyond loopback, skein server serves it
over HTTPS (a certificate of skein's CA, DATA/tls/ca.pem, or --tls-cert) and asks
for a login: the link carries a token signed with your credentials (--creds: an
observer's from ` + "`skein creds observer`" + `, or an admin's) that works once, within 2
minutes. The session lasts 12 hours, or until the credentials are revoked.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			u, err := url.Parse(args[0])
			if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
				return fmt.Errorf("%q is not the dashboard's URL: want https://HOST:PORT/, as skein server logs it", args[0])
			}
			host := u.Hostname()
			if u.Scheme == "http" {
				if bus.Loopback(host) {
					return fmt.Errorf("a dashboard on loopback needs no login: open %s", args[0])
				}
				return fmt.Errorf("beyond loopback the dashboard is served over HTTPS: use https://%s/", u.Host)
			}
			if net.ParseIP(host) == nil {
				if err := validate.Host.Check(host); err != nil {
					return fmt.Errorf("the dashboard's URL: %w", err)
				}
			}
			o, err := g.connOptions("skein-cli", false, g.logger())
			if err != nil {
				return err
			}
			if o.Creds == nil {
				return errors.New("no credentials: give --creds FILE (an observer's from `skein creds observer` on the server's machine, or an admin's)")
			}
			token, err := bus.SignLogin(o.Creds, u.Host, time.Now())
			if err != nil {
				return err
			}
			link := url.URL{Scheme: "https", Host: u.Host, Path: "/login", RawQuery: url.Values{"token": {token}}.Encode()}
			fmt.Fprintln(cmd.ErrOrStderr(), "Open this link within 2 minutes; it works once:")
			fmt.Fprintln(cmd.OutOrStdout(), link.String())
			return nil
		},
	}
}
