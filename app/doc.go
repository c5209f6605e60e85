// Package app is the application layer of ustack's TCP/IP stack: the seed
// article's ACK server and its client.
//
// In the article's four-layer picture, data from a client passes down through
// transport (TCP), internet (IP) and network access (the TUN device) and back up
// on the other side. This package sits on top of all that and sees none of it:
// it is written once against net.Listener and net.Conn. Below it, package stack
// (gVisor's netstack, through its gonet adapters) or the kernel's own sockets
// (package net) provide those interfaces; above it, cmd/ustack wires a listener
// to a Server and a dialled connection to RunClient. The dependency runs one
// way: app imports neither stack nor tunif nor gVisor, so the same code serves
// on the userspace stack and on kernel sockets (deps_test.go pins this).
//
// The protocol is the article's: the client sends lines, the server answers
// each line with "ACK: <line>\n". A line longer than MaxChunk is answered in
// pieces of MaxChunk bytes, so a connection never buffers more than about
// MaxChunk bytes of input however long a line is.
package app
