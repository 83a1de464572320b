//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sys/unix"
)

// The netfilter queue's netlink protocol (linux/netfilter/nfnetlink_queue.h):
// this kernel has no sch_netem, but it has NFQUEUE, and a packet waits in
// the queue until its verdict.
const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3

	nfqnlCfgCmdBind = 1
	nfqnlCopyMeta   = 1
	nfAccept        = 1
)

// delay holds every packet of netfilter queue num for d before accepting
// it, in the order they came (a constant delay keeps it), for lifetime.
// The rule that queues them must pass packets when nobody listens
// (--queue-bypass), so that its end is the delay's end.
func delay(num int, d, lifetime time.Duration) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netfilter netlink: %w", err)
	}
	defer unix.Close(fd)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_NO_ENOBUFS, 1)
	seq := uint32(0)
	send := func(msgType uint16, flags uint16, attrs []byte) error {
		seq++
		b := nlmsg(nfnlSubsysQueue<<8|msgType, unix.NLM_F_REQUEST|flags, seq, uint16(num), attrs)
		return unix.Sendto(fd, b, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	}
	config := func(attrs []byte) error {
		if err := send(nfqnlMsgConfig, unix.NLM_F_ACK, attrs); err != nil {
			return err
		}
		return readAck(fd)
	}
	if err := config(nlattr(nfqaCfgCmd, []byte{nfqnlCfgCmdBind, 0, 0, 0})); err != nil {
		return fmt.Errorf("binding queue %d: %w", num, err)
	}
	params := make([]byte, 5)
	binary.BigEndian.PutUint32(params, 0xffff)
	params[4] = nfqnlCopyMeta
	maxLen := binary.BigEndian.AppendUint32(nil, 16384)
	if err := config(append(nlattr(nfqaCfgParams, params), nlattr(nfqaCfgQueueMax, maxLen)...)); err != nil {
		return fmt.Errorf("queue %d's parameters: %w", num, err)
	}

	type held struct {
		id uint32
		at time.Time
	}
	queue := make(chan held, 65536)
	errs := make(chan error, 1)
	go func() {
		for p := range queue {
			time.Sleep(time.Until(p.at.Add(d)))
			v := make([]byte, 8)
			binary.BigEndian.PutUint32(v[0:], nfAccept)
			binary.BigEndian.PutUint32(v[4:], p.id)
			if err := send(nfqnlMsgVerdict, 0, nlattr(nfqaVerdictHdr, v)); err != nil {
				errs <- fmt.Errorf("verdict: %w", err)
				return
			}
		}
	}()
	end := time.Now().Add(lifetime)
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 200000})
	buf := make([]byte, 1<<16)
	for time.Now().Before(end) {
		select {
		case err := <-errs:
			return err
		default:
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) || errors.Is(err, unix.ENOBUFS) {
			continue
		}
		if err != nil {
			return err
		}
		now := time.Now()
		for _, m := range splitMsgs(buf[:n]) {
			if m.typ != nfnlSubsysQueue<<8|nfqnlMsgPacket {
				continue
			}
			if hdr := attr(m.body, nfqaPacketHdr); len(hdr) >= 4 {
				queue <- held{id: binary.BigEndian.Uint32(hdr), at: now}
			}
		}
	}
	return nil
}

// nlmsg is one nfnetlink message: the netlink header, nfgenmsg (family
// unspecified, version 0, the queue's number), then the attributes.
func nlmsg(typ, flags uint16, seq uint32, resID uint16, attrs []byte) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4, unix.NLMSG_HDRLEN+4+len(attrs))
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)+len(attrs)))
	binary.NativeEndian.PutUint16(b[4:], typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	binary.NativeEndian.PutUint32(b[8:], seq)
	b[16], b[17] = unix.AF_UNSPEC, 0
	binary.BigEndian.PutUint16(b[18:], resID)
	return append(b, attrs...)
}

// nlattr is one netlink attribute, padded to 4 bytes.
func nlattr(typ uint16, data []byte) []byte {
	b := make([]byte, 4, 4+len(data)+3)
	binary.NativeEndian.PutUint16(b[0:], uint16(4+len(data)))
	binary.NativeEndian.PutUint16(b[2:], typ)
	b = append(b, data...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

type nlMsg struct {
	typ  uint16
	body []byte // after nfgenmsg
	err  int32  // for NLMSG_ERROR: 0 is an ack
}

// splitMsgs parses the netlink messages of one read.
func splitMsgs(b []byte) []nlMsg {
	var out []nlMsg
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			break
		}
		m := nlMsg{typ: binary.NativeEndian.Uint16(b[4:])}
		body := b[unix.NLMSG_HDRLEN:l]
		switch {
		case m.typ == unix.NLMSG_ERROR && len(body) >= 4:
			m.err = int32(binary.NativeEndian.Uint32(body))
		case len(body) >= 4:
			m.body = body[4:]
		}
		out = append(out, m)
		l = (l + 3) &^ 3
		if l > len(b) {
			break
		}
		b = b[l:]
	}
	return out
}

// attr finds attribute typ among attrs.
func attr(attrs []byte, typ uint16) []byte {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:]))
		t := binary.NativeEndian.Uint16(attrs[2:]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(attrs) {
			return nil
		}
		if t == typ {
			return attrs[4:l]
		}
		l = (l + 3) &^ 3
		if l > len(attrs) {
			return nil
		}
		attrs = attrs[l:]
	}
	return nil
}

// readAck waits for the kernel's answer to a request sent with NLM_F_ACK.
func readAck(fd int) error {
	buf := make([]byte, 8192)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return err
		}
		for _, m := range splitMsgs(buf[:n]) {
			if m.typ == unix.NLMSG_ERROR {
				if m.err != 0 {
					return unix.Errno(-m.err)
				}
				return nil
			}
		}
	}
}
