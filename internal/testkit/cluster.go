package testkit

import "context"

// Kill stops the server (every node) as a crash would, for the rest of a
// cluster; KillNode stops one node so.
func (s *Server) Kill() {
	for i := range s.nodes {
		s.KillNode(i)
	}
}

// KillNode stops node i as a crash would, for the rest of the cluster: its
// presence stops renewing its lease and is not cleaned up (the other nodes
// must find the lease lapsed), its connections are cut without the
// graceful end of streams, and its background parts stop. Unlike a real
// SIGKILL, in-process goroutines still end and the store is closed, so the
// test leaks nothing. Stopping it afterwards is a no-op.
func (s *Server) KillNode(i int) {
	if s.lb != nil {
		s.lb.setDown(i, true)
	}
	n := s.nodes[i]
	s.mu.Lock()
	a, hs, stopParts, ran := n.app, n.http, n.stopParts, n.ran
	n.app, n.http = nil, nil
	if i == 0 {
		s.App = nil
	}
	s.mu.Unlock()
	if a == nil {
		return
	}
	if a.Presence != nil {
		a.Presence.Abandon()
	}
	hs.CloseClientConnections()
	hs.Close()
	stopParts()
	if err := <-ran; err != nil && err != context.Canceled {
		s.T.Errorf("background parts: %v", err)
	}
	if err := a.Close(); err != nil {
		s.T.Errorf("close app: %v", err)
	}
}
