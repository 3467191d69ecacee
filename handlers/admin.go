package handlers

import "github.com/go-chi/chi/v5"

// mountAdmin registers the admin routes on r, which already requires admin
// rights (requireAdmin) and applies the REST middleware.
//
// The webhook endpoints (/webhooks…) are defined in handlers/webhooks.go.
func (s *server) mountAdmin(r chi.Router) {
	mountWebhooks(r, s.deps.Webhooks)
}
