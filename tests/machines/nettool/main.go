// Command nettool measures a network path for the machines bed's
// benchmarks: round trips and TCP throughput between two hosts, with the
// same program on both ends wherever they are (a machine, a container).
//
//	nettool serve ADDR          answer round trips and sink bulk data (stops after 2 minutes)
//	nettool rtt ADDR N          N one-byte round trips on one connection: median in µs
//	nettool tput ADDR SECONDS   send for SECONDS on one connection: Mbit/s the server took
//	nettool http ADDR TEXT      answer every HTTP request with TEXT (stops after 10 minutes)
//	nettool dial ADDR           one TCP connection's set-up, answered or refused: µs
//	nettool delay Q MS SECONDS  hold each packet of netfilter queue Q for MS ms (stops after SECONDS)
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: nettool serve ADDR | rtt ADDR N | tput ADDR SECONDS")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2])
	case "rtt":
		err = rtt(os.Args[2], atoi(os.Args[3]))
	case "tput":
		err = tput(os.Args[2], atoi(os.Args[3]))
	case "http":
		err = httpText(os.Args[2], os.Args[3])
	case "dial":
		err = dial(os.Args[2])
	case "delay":
		if len(os.Args) < 5 {
			err = fmt.Errorf("usage: nettool delay QUEUE MS SECONDS")
			break
		}
		err = delay(atoi(os.Args[2]), time.Duration(atoi(os.Args[3]))*time.Millisecond, time.Duration(atoi(os.Args[4]))*time.Second)
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nettool:", err)
		os.Exit(1)
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 100000 {
		fmt.Fprintln(os.Stderr, "nettool: want a count from 1 to 100000, not", s)
		os.Exit(2)
	}
	return n
}

// serve answers each connection by its first byte: 'e' echoes, 't' sinks
// and then writes how many bytes it took. It stops by itself.
func serve(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	time.AfterFunc(2*time.Minute, func() { l.Close() })
	for {
		c, err := l.Accept()
		if err != nil {
			return nil
		}
		go func() {
			defer c.Close()
			kind := make([]byte, 1)
			if _, err := io.ReadFull(c, kind); err != nil {
				return
			}
			if kind[0] == 'e' {
				_, _ = io.Copy(c, c)
				return
			}
			n, _ := io.Copy(io.Discard, c)
			fmt.Fprintf(c, "%d\n", n)
		}()
	}
}

func rtt(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.Write([]byte{'e'}); err != nil {
		return err
	}
	b := []byte{1}
	var d []time.Duration
	for range n {
		start := time.Now()
		if _, err := c.Write(b); err != nil {
			return err
		}
		if _, err := io.ReadFull(c, b); err != nil {
			return err
		}
		d = append(d, time.Since(start))
	}
	slices.Sort(d)
	fmt.Printf("%.1f\n", float64(d[len(d)/2].Nanoseconds())/1000)
	return nil
}

func tput(addr string, seconds int) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Duration(seconds)*time.Second + 30*time.Second))
	if _, err := c.Write([]byte{'t'}); err != nil {
		return err
	}
	buf := make([]byte, 128<<10)
	start := time.Now()
	for time.Since(start) < time.Duration(seconds)*time.Second {
		if _, err := c.Write(buf); err != nil {
			return err
		}
	}
	if err := c.(*net.TCPConn).CloseWrite(); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	took, _ := strconv.ParseFloat(line[:len(line)-1], 64)
	fmt.Printf("%.0f\n", took*8/time.Since(start).Seconds()/1e6)
	return nil
}

func httpText(addr, text string) error {
	srv := &http.Server{Addr: addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprintln(w, text)
	})}
	time.AfterFunc(10*time.Minute, func() { srv.Close() })
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

// dial times one TCP handshake to addr: a refusal (RST) is an answer too,
// so a port nobody listens on measures the path's round trip.
func dial(addr string) error {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	took := time.Since(start)
	if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
		return err
	}
	if c != nil {
		c.Close()
	}
	fmt.Printf("%.1f\n", float64(took.Nanoseconds())/1000)
	return nil
}
