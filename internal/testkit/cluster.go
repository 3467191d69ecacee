package testkit

import "context"

// Kill stops the server as a crash would, for the rest of the cluster: its
// presence stops renewing its lease and is not cleaned up (the other nodes
// must find the lease lapsed), its connections are cut without the
// graceful end of streams, and its background parts stop. Unlike a real
// SIGKILL, in-process goroutines still end and the store is closed, so the
// test leaks nothing. Stop afterwards is a no-op.
func (s *Server) Kill() {
	s.mu.Lock()
	a, hs, stopParts, ran := s.App, s.http, s.stopParts, s.ran
	s.App, s.http = nil, nil
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
