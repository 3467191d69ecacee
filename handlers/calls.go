package handlers

import (
	"context"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"callsig/calls"
)

// Request bodies of the call endpoints, as the contract names their fields.
type (
	createCallBody struct {
		Invitees               []string          `json:"invitees"`
		Mode                   calls.Mode        `json:"mode"`
		Timeout                wholeNumber       `json:"timeout"`
		ExtendedData           string            `json:"extendedData"`
		PushConfig             *calls.PushConfig `json:"pushConfig"`
		EnableNotReceivedCheck bool              `json:"enableNotReceivedCheck"`
		BusyPolicy             calls.BusyPolicy  `json:"busyPolicy"`
	}
	cancelBody struct {
		Invitees     []string          `json:"invitees"`
		ExtendedData string            `json:"extendedData"`
		PushConfig   *calls.PushConfig `json:"pushConfig"`
	}
	extendedDataBody struct {
		ExtendedData string `json:"extendedData"`
	}
	inviteBody struct {
		Invitees   []string          `json:"invitees"`
		PushConfig *calls.PushConfig `json:"pushConfig"`
		BusyPolicy calls.BusyPolicy  `json:"busyPolicy"`
	}
	leaveBody struct {
		ExtendedData string            `json:"extendedData"`
		PushConfig   *calls.PushConfig `json:"pushConfig"`
	}
)

// mountCalls registers the call endpoints on r.
func mountCalls(r chi.Router, svc *calls.Service) {
	r.Method(http.MethodPost, "/calls", action(false, http.StatusCreated, func(ctx context.Context, a calls.Actor, _ string, b createCallBody) (*calls.InviteResult, error) {
		return svc.Invite(ctx, a, calls.InviteInput{
			Invitees: b.Invitees, Mode: b.Mode, Timeout: int(b.Timeout), ExtendedData: b.ExtendedData,
			PushConfig: b.PushConfig, EnableNotReceivedCheck: b.EnableNotReceivedCheck, BusyPolicy: b.BusyPolicy,
		})
	}))
	r.Get("/calls", listCalls(svc))
	r.Get("/calls/{callID}", func(w http.ResponseWriter, r *http.Request) {
		res, err := svc.Get(r.Context(), actorOf(r), chi.URLParam(r, "callID"))
		respond(w, r, http.StatusOK, res, err)
	})
	r.Method(http.MethodPost, "/calls/{callID}/cancel", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b cancelBody) (*calls.CancelResult, error) {
		return svc.Cancel(ctx, a, id, calls.CancelInput{Invitees: b.Invitees, ExtendedData: b.ExtendedData, PushConfig: b.PushConfig})
	}))
	r.Method(http.MethodPost, "/calls/{callID}/accept", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b extendedDataBody) (*calls.ActionResult, error) {
		return svc.Accept(ctx, a, id, b.ExtendedData)
	}))
	r.Method(http.MethodPost, "/calls/{callID}/reject", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b extendedDataBody) (*calls.ActionResult, error) {
		return svc.Reject(ctx, a, id, b.ExtendedData)
	}))
	r.Method(http.MethodPost, "/calls/{callID}/invite", action(false, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b inviteBody) (*calls.CallingInviteResult, error) {
		return svc.CallingInvite(ctx, a, id, calls.CallingInviteInput{Invitees: b.Invitees, PushConfig: b.PushConfig, BusyPolicy: b.BusyPolicy})
	}))
	r.Method(http.MethodPost, "/calls/{callID}/join", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b extendedDataBody) (*calls.JoinResult, error) {
		return svc.Join(ctx, a, id, b.ExtendedData)
	}))
	r.Method(http.MethodPost, "/calls/{callID}/quit", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b leaveBody) (*calls.QuitResult, error) {
		return svc.Quit(ctx, a, id, calls.LeaveInput{ExtendedData: b.ExtendedData, PushConfig: b.PushConfig})
	}))
	r.Method(http.MethodPost, "/calls/{callID}/end", action(true, http.StatusOK, func(ctx context.Context, a calls.Actor, id string, b leaveBody) (*calls.EndResult, error) {
		return svc.End(ctx, a, id, calls.LeaveInput{ExtendedData: b.ExtendedData, PushConfig: b.PushConfig})
	}))
}

// action is the shape of every POST on calls: decode the body B (optional
// or not), call the service as the authenticated actor on {callID}, and
// encode its result with status. With an Idempotency-Key the service
// records the encoded answer in the transaction of its change (or replays
// the one recorded before), and that answer is what is sent.
func action[B, R any](optionalBody bool, status int, do func(context.Context, calls.Actor, string, B) (R, error)) recordsInTx {
	return func(w http.ResponseWriter, r *http.Request) {
		var body B
		if err := decodeJSON(r, &body, optionalBody); err != nil {
			writeError(w, r, err)
			return
		}
		ctx, intent := idempotentContext(r, status)
		res, err := do(ctx, actorOf(r), chi.URLParam(r, "callID"), body)
		respondIdempotent(w, r, intent, status, res, err)
	}
}

// listCalls serves GET /calls?count=&nextFlag=.
func listCalls(svc *calls.Service) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		count, nextFlag := int64(calls.DefaultListCount), int64(0)
		if s := q.Get("count"); s != "" {
			// A count past int64 is still above 100: the contract
			// bounds none.
			n, err := parseUnbounded(s)
			if err != nil || n < 1 {
				writeError(w, r, invalidField("count", "must be a positive integer"))
				return
			}
			count = min(n, calls.MaxListCount)
		}
		if s := q.Get("nextFlag"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n < 0 {
				writeError(w, r, invalidField("nextFlag", "must be a non-negative integer"))
				return
			}
			nextFlag = n
		}
		res, err := svc.List(r.Context(), actorOf(r), int(count), nextFlag)
		respond(w, r, http.StatusOK, res, err)
	}
}

// respond writes res with status, or the error.
func respond(w http.ResponseWriter, r *http.Request, status int, res any, err error) {
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, r, status, res)
}

// actorOf is the authenticated user and device of the request.
func actorOf(r *http.Request) calls.Actor {
	info := infoFrom(r.Context())
	if info == nil {
		return calls.Actor{}
	}
	return calls.Actor{UserID: info.user, Device: info.device}
}
