package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

func TestLoadValidatesSpec(t *testing.T) {
	ctx := context.Background()
	doc, err := Load(ctx)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if doc.OpenAPI != "3.0.3" {
		t.Errorf("openapi = %q, want 3.0.3", doc.OpenAPI)
	}
	// Examples are checked against their schemas too.
	if err := doc.Validate(ctx, openapi3.EnableExamplesValidation()); err != nil {
		t.Fatalf("Validate with examples: %v", err)
	}

	again, err := Load(ctx)
	if err != nil {
		t.Fatalf("second Load: %v", err)
	}
	if again == doc {
		t.Error("Load returned the same document twice; want a fresh one each call")
	}
}

// TestOperationsFollowConventions checks the rules every operation must keep,
// so that an operation added later cannot silently drop one.
func TestOperationsFollowConventions(t *testing.T) {
	doc := mustLoad(t)
	seen := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			if op.OperationID == "" || seen[op.OperationID] {
				t.Errorf("%s: missing or duplicate operationId %q", name, op.OperationID)
			}
			seen[op.OperationID] = true
			if len(op.Tags) != 1 {
				t.Errorf("%s: want exactly one tag, got %v", name, op.Tags)
			}

			authenticated := op.Security == nil || len(*op.Security) > 0
			if authenticated {
				for _, status := range []int{400, 401, 429, 500, 503} {
					if status == 429 && path == "/events" {
						continue // an empty stream with a retry: EventSource gives up on 429
					}
					if op.Responses.Status(status) == nil {
						t.Errorf("%s: authenticated operation lacks %d", name, status)
					}
				}
				if path != "/events" && parameter(op, "header", "X-Device-ID") == nil {
					t.Errorf("%s: authenticated operation lacks X-Device-ID", name)
				}
			}
			if method == http.MethodPost {
				if parameter(op, "header", "Idempotency-Key") == nil {
					t.Errorf("%s: POST lacks Idempotency-Key", name)
				}
				if op.Responses.Status(422) == nil {
					t.Errorf("%s: POST lacks 422 (idempotency_conflict)", name)
				}
			}
			// The server reads and bounds the body of every request it
			// authenticates (but the stream's), one the operation takes
			// none of too.
			if op.RequestBody != nil || (authenticated && path != "/events") {
				for _, status := range []int{408, 413, 415} {
					if op.Responses.Status(status) == nil {
						t.Errorf("%s: operation whose body is read lacks %d", name, status)
					}
				}
			}
			if op.RequestBody != nil {
				media := op.RequestBody.Value.Content.Get("application/json")
				if media == nil {
					t.Errorf("%s: request body is not application/json", name)
				} else if ap := media.Schema.Value.AdditionalProperties.Has; ap == nil || *ap {
					t.Errorf("%s: request body must set additionalProperties: false", name)
				}
			}
			if strings.HasPrefix(path, "/calls/") && op.Responses.Status(404) == nil {
				t.Errorf("%s: call operation lacks 404", name)
			}
			if strings.HasPrefix(path, "/webhooks") && op.Responses.Status(403) == nil {
				t.Errorf("%s: admin operation lacks 403", name)
			}
		}
	}
}

func TestRequestValidation(t *testing.T) {
	v := newValidator(t)
	const callPath = "/calls/Zk3vQ9mT2xLp8RwN4bYc7A"
	tenInvitees := `{"invitees":["u0","u1","u2","u3","u4","u5","u6","u7","u8","u9"]}`
	longData := strings.Repeat("x", 2049)

	tests := []struct {
		name    string
		method  string
		target  string
		body    string
		header  map[string]string
		wantErr bool
	}{
		{name: "create call minimal", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`},
		{name: "create call full", method: "POST", target: "/calls", body: `{"invitees":["bob","carol@example.com"],"mode":"advanced","timeout":600,"extendedData":"x","pushConfig":{"title":"t","content":"c","payload":"p","resourcesID":"r"},"enableNotReceivedCheck":true}`},
		{name: "create call nine invitees", method: "POST", target: "/calls", body: `{"invitees":["u1","u2","u3","u4","u5","u6","u7","u8","u9"]}`},
		{name: "create call ten invitees", method: "POST", target: "/calls", body: tenInvitees, wantErr: true},
		{name: "create call no invitees", method: "POST", target: "/calls", body: `{"invitees":[]}`, wantErr: true},
		{name: "create call duplicate invitees", method: "POST", target: "/calls", body: `{"invitees":["bob","bob"]}`, wantErr: true},
		{name: "create call timeout 0", method: "POST", target: "/calls", body: `{"invitees":["bob"],"timeout":0}`, wantErr: true},
		{name: "create call timeout 601", method: "POST", target: "/calls", body: `{"invitees":["bob"],"timeout":601}`, wantErr: true},
		{name: "create call unknown mode", method: "POST", target: "/calls", body: `{"invitees":["bob"],"mode":"common"}`, wantErr: true},
		{name: "create call busyPolicy reject", method: "POST", target: "/calls", body: `{"invitees":["bob"],"busyPolicy":"reject"}`},
		{name: "create call unknown busyPolicy", method: "POST", target: "/calls", body: `{"invitees":["bob"],"busyPolicy":"hangup"}`, wantErr: true},
		{name: "calling invite busyPolicy ring", method: "POST", target: callPath + "/invite", body: `{"invitees":["dave"],"busyPolicy":"ring"}`},
		{name: "calling invite unknown busyPolicy", method: "POST", target: callPath + "/invite", body: `{"invitees":["dave"],"busyPolicy":"Ring"}`, wantErr: true},
		{name: "create call bad user ID", method: "POST", target: "/calls", body: `{"invitees":["bob smith"]}`, wantErr: true},
		{name: "create call extendedData too long", method: "POST", target: "/calls", body: `{"invitees":["bob"],"extendedData":"` + longData + `"}`, wantErr: true},
		{name: "create call unknown field", method: "POST", target: "/calls", body: `{"invitees":["bob"],"timeOut":30}`, wantErr: true},
		{name: "create call unknown pushConfig field", method: "POST", target: "/calls", body: `{"invitees":["bob"],"pushConfig":{"badge":1}}`, wantErr: true},
		{name: "create call without body", method: "POST", target: "/calls", wantErr: true},
		{name: "create call with charset", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"Content-Type": "application/json; charset=utf-8"}},
		{name: "create call as text", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"Content-Type": "text/plain"}, wantErr: true},
		{name: "create call with idempotency key", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"Idempotency-Key": "k-1"}},
		{name: "create call idempotency key too long", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"Idempotency-Key": strings.Repeat("k", 256)}, wantErr: true},
		{name: "create call bad device ID", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"X-Device-ID": "my phone"}, wantErr: true},
		{name: "create call without token", method: "POST", target: "/calls", body: `{"invitees":["bob"]}`, header: map[string]string{"Authorization": ""}, wantErr: true},

		{name: "list calls", method: "GET", target: "/calls?count=500&nextFlag=12345678901"},
		{name: "list calls count 0", method: "GET", target: "/calls?count=0", wantErr: true},
		{name: "list calls negative nextFlag", method: "GET", target: "/calls?nextFlag=-1", wantErr: true},
		{name: "get call", method: "GET", target: "/calls/abc"},
		{name: "get call bad ID", method: "GET", target: "/calls/a.b", wantErr: true},

		{name: "accept without body", method: "POST", target: callPath + "/accept"},
		{name: "accept empty body with JSON content type", method: "POST", target: callPath + "/accept", header: map[string]string{"Content-Type": "application/json"}},
		{name: "accept empty object", method: "POST", target: callPath + "/accept", body: `{}`},
		{name: "accept extendedData", method: "POST", target: callPath + "/accept", body: `{"extendedData":"hi"}`},
		{name: "accept unknown field", method: "POST", target: callPath + "/accept", body: `{"extendeddata":"hi"}`, wantErr: true},
		{name: "reject without body", method: "POST", target: callPath + "/reject"},
		{name: "cancel all", method: "POST", target: callPath + "/cancel", body: `{"invitees":[]}`},
		{name: "cancel ten", method: "POST", target: callPath + "/cancel", body: tenInvitees, wantErr: true},
		{name: "invite", method: "POST", target: callPath + "/invite", body: `{"invitees":["dave"]}`},
		{name: "invite without invitees", method: "POST", target: callPath + "/invite", body: `{}`, wantErr: true},
		{name: "invite with extendedData", method: "POST", target: callPath + "/invite", body: `{"invitees":["dave"],"extendedData":"x"}`, wantErr: true},
		{name: "join", method: "POST", target: callPath + "/join", header: map[string]string{"X-Device-ID": "tab-2"}},
		{name: "quit", method: "POST", target: callPath + "/quit", body: `{"pushConfig":{"title":"bye"}}`},
		{name: "end", method: "POST", target: callPath + "/end", body: `{"extendedData":"x"}`},

		{name: "events with header token", method: "GET", target: "/events?deviceID=tab-1", header: map[string]string{"Last-Event-ID": "42"}},
		{name: "events with query token", method: "GET", target: "/events?access_token=jwt&lastEventID=7", header: map[string]string{"Authorization": ""}},
		{name: "events without token", method: "GET", target: "/events", header: map[string]string{"Authorization": ""}, wantErr: true},
		{name: "events bad Last-Event-ID", method: "GET", target: "/events", header: map[string]string{"Last-Event-ID": "abc"}, wantErr: true},
		{name: "events bad deviceID", method: "GET", target: "/events?deviceID=a%20b", wantErr: true},
		{name: "events with heartbeat events", method: "GET", target: "/events?heartbeat=event"},
		{name: "events bad heartbeat", method: "GET", target: "/events?heartbeat=frame", wantErr: true},

		{name: "create webhook", method: "POST", target: "/webhooks", body: `{"url":"https://example.com/h","eventTypes":["call.ended"],"description":"d"}`},
		{name: "create webhook bad event type", method: "POST", target: "/webhooks", body: `{"url":"https://example.com/h","eventTypes":["call.started"]}`, wantErr: true},
		{name: "create webhook without url", method: "POST", target: "/webhooks", body: `{}`, wantErr: true},
		{name: "list deliveries", method: "GET", target: "/webhooks/wh1/deliveries?limit=1000&status=failed"},
		{name: "list deliveries bad status", method: "GET", target: "/webhooks/wh1/deliveries?status=done", wantErr: true},
		{name: "list deliveries limit too big", method: "GET", target: "/webhooks/wh1/deliveries?limit=1001", wantErr: true},
		{name: "retry delivery", method: "POST", target: "/webhooks/wh1/deliveries/17/retry"},
		{name: "delete webhook", method: "DELETE", target: "/webhooks/wh1"},

		{name: "dev token", method: "POST", target: "/dev/token", body: `{"userID":"alice","ttlSeconds":60}`, header: map[string]string{"Authorization": ""}},
		{name: "dev token ttl too short", method: "POST", target: "/dev/token", body: `{"userID":"alice","ttlSeconds":59}`, wantErr: true},
		{name: "healthz without token", method: "GET", target: "/healthz", header: map[string]string{"Authorization": ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(tt.method, tt.target, tt.body, tt.header)
			_, err := v.validateRequest(req)
			if tt.wantErr && err == nil {
				t.Fatal("request validated; want an error")
			}
			if err != nil {
				t.Logf("rejected: %v", err)
			}
			if !tt.wantErr && err != nil {
				t.Fatalf("request rejected: %v", err)
			}
		})
	}
}

// The validator fills in schema defaults, so handlers see them in the body.
func TestRequestDefaultsAreApplied(t *testing.T) {
	v := newValidator(t)
	req := newRequest("POST", "/calls", `{"invitees":["bob"]}`, nil)
	if _, err := v.validateRequest(req); err != nil {
		t.Fatalf("request rejected: %v", err)
	}
	var body struct {
		Mode                   string `json:"mode"`
		Timeout                int    `json:"timeout"`
		EnableNotReceivedCheck *bool  `json:"enableNotReceivedCheck"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		t.Fatalf("decode body: %v", err)
	}
	if body.Mode != "general" || body.Timeout != 90 || body.EnableNotReceivedCheck == nil || *body.EnableNotReceivedCheck {
		t.Errorf("defaults = %+v, want mode general, timeout 90, enableNotReceivedCheck false", body)
	}
}

func TestResponseValidation(t *testing.T) {
	v := newValidator(t)
	const callPath = "/calls/Zk3vQ9mT2xLp8RwN4bYc7A"
	callInfo := `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","caller":"alice","mode":"general","state":"started","timeout":90,"extendedData":"","createTime":1767225600000,"endTime":0,"callUserList":[{"userID":"alice","state":"accepted","inviter":"alice","extendedData":"","updateTime":1767225600000},{"userID":"bob","state":"notYetReceived","inviter":"alice","extendedData":"","updateTime":1767225605000}]}`
	problem := func(status int, code string) string {
		return `{"type":"urn:callsig:error:` + code + `","title":"t","status":` + strconv.Itoa(status) + `,"detail":"d","code":"` + code + `"}`
	}
	const (
		jsonCT    = "application/json"
		problemCT = "application/problem+json"
	)

	tests := []struct {
		name        string
		method      string
		target      string
		reqBody     string
		status      int
		contentType string
		header      map[string]string
		body        string
		wantErr     bool
	}{
		{name: "call info", method: "GET", target: callPath, status: 200, contentType: jsonCT, body: callInfo},
		{name: "call info with charset", method: "GET", target: callPath, status: 200, contentType: "application/json; charset=utf-8", body: callInfo},
		{name: "call info short callID", method: "GET", target: callPath, status: 200, contentType: jsonCT, body: strings.Replace(callInfo, "Zk3vQ9mT2xLp8RwN4bYc7A", "short", 1), wantErr: true},
		{name: "call info null user list", method: "GET", target: callPath, status: 200, contentType: jsonCT, body: strings.Replace(callInfo, callInfo[strings.Index(callInfo, `[`):len(callInfo)-1], "null", 1), wantErr: true},
		{name: "call info missing endTime", method: "GET", target: callPath, status: 200, contentType: jsonCT, body: strings.Replace(callInfo, `"endTime":0,`, "", 1), wantErr: true},
		{name: "call info unknown user state", method: "GET", target: callPath, status: 200, contentType: jsonCT, body: strings.Replace(callInfo, "notYetReceived", "ringing", 1), wantErr: true},
		{name: "call not found", method: "GET", target: callPath, status: 404, contentType: problemCT, body: problem(404, "call_not_found")},
		{name: "call 404 with generic code", method: "GET", target: callPath, status: 404, contentType: problemCT, body: problem(404, "not_found"), wantErr: true},
		{name: "error as plain JSON", method: "GET", target: callPath, status: 404, contentType: jsonCT, body: problem(404, "call_not_found"), wantErr: true},
		{name: "undocumented status", method: "GET", target: callPath, status: 418, contentType: problemCT, body: problem(418, "internal"), wantErr: true},

		{name: "create call", method: "POST", target: "/calls", reqBody: `{"invitees":["bob"]}`, status: 201, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","timeout":90,"errorUserList":[{"userID":"carol","reason":"call_full"}],"busyUsers":[],"call":` + callInfo + `}`},
		{name: "create call with busy users", method: "POST", target: "/calls", reqBody: `{"invitees":["bob","carol"],"busyPolicy":"reject"}`, status: 201, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","timeout":90,"errorUserList":[{"userID":"carol","reason":"busy"}],"busyUsers":[],"call":` + callInfo + `}`},
		{name: "create call without busyUsers", method: "POST", target: "/calls", reqBody: `{"invitees":["bob"]}`, status: 201, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","timeout":90,"errorUserList":[],"call":` + callInfo + `}`, wantErr: true},
		{name: "calling invite", method: "POST", target: callPath + "/invite", reqBody: `{"invitees":["dave"],"busyPolicy":"ring"}`, status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","errorUserList":[],"busyUsers":["dave"]}`},
		{name: "calling invite without busyUsers", method: "POST", target: callPath + "/invite", reqBody: `{"invitees":["dave"]}`, status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","errorUserList":[]}`, wantErr: true},
		{name: "create call null errorUserList", method: "POST", target: "/calls", reqBody: `{"invitees":["bob"]}`, status: 201, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","timeout":90,"errorUserList":null,"busyUsers":[],"call":` + callInfo + `}`, wantErr: true},
		{name: "list calls", method: "GET", target: "/calls", status: 200, contentType: jsonCT, body: `{"callList":[` + callInfo + `],"nextFlag":0}`},
		{name: "list calls without nextFlag", method: "GET", target: "/calls", status: 200, contentType: jsonCT, body: `{"callList":[]}`, wantErr: true},

		{name: "accept", method: "POST", target: callPath + "/accept", status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A"}`},
		{name: "accept invalid state", method: "POST", target: callPath + "/accept", status: 409, contentType: problemCT, body: problem(409, "invalid_state")},
		{name: "accept 409 with 404 code", method: "POST", target: callPath + "/accept", status: 409, contentType: problemCT, body: problem(409, "call_not_found"), wantErr: true},
		{name: "accept 409 with status 400 in body", method: "POST", target: callPath + "/accept", status: 409, contentType: problemCT, body: `{"type":"urn:callsig:error:invalid_state","title":"t","status":400,"code":"invalid_state"}`, wantErr: true},
		{name: "join call full", method: "POST", target: callPath + "/join", status: 409, contentType: problemCT, body: problem(409, "call_full"), wantErr: true},
		{name: "join call full is not found", method: "POST", target: callPath + "/join", status: 404, contentType: problemCT, body: problem(404, "call_not_found")},
		{name: "validation error with fields", method: "POST", target: callPath + "/accept", status: 400, contentType: problemCT, body: `{"type":"urn:callsig:error:invalid_request","title":"Invalid request","status":400,"detail":"d","code":"invalid_request","errors":[{"field":"extendedData","message":"too long"}]}`},
		{name: "rate limited", method: "POST", target: callPath + "/accept", status: 429, contentType: problemCT, header: map[string]string{"Retry-After": "2"}, body: problem(429, "rate_limited")},
		{name: "rate limited without Retry-After", method: "POST", target: callPath + "/accept", status: 429, contentType: problemCT, body: problem(429, "rate_limited"), wantErr: true},
		{name: "idempotency conflict 422", method: "POST", target: callPath + "/accept", status: 422, contentType: problemCT, body: problem(422, "idempotency_conflict")},
		{name: "cancel", method: "POST", target: callPath + "/cancel", status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","errorInvitees":["dave"]}`},
		{name: "join", method: "POST", target: callPath + "/join", status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","createTime":1,"joinTime":2,"extendedData":"","callUserList":[]}`},
		{name: "quit", method: "POST", target: callPath + "/quit", status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","createTime":1,"acceptTime":2,"quitTime":3}`},
		{name: "end", method: "POST", target: callPath + "/end", status: 200, contentType: jsonCT, body: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","createTime":1,"acceptTime":2,"endTime":3}`},

		{name: "events stream", method: "GET", target: "/events", status: 200, contentType: "text/event-stream", body: "retry: 3000\n\n: ping\n\n"},
		{name: "created webhook", method: "POST", target: "/webhooks", reqBody: `{"url":"https://example.com/h"}`, status: 201, contentType: jsonCT, body: `{"id":"wh1","url":"https://example.com/h","eventTypes":[],"description":"","secret":"whsec_c2VjcmV0","createdAt":1,"enabled":true}`},
		{name: "created webhook without secret", method: "POST", target: "/webhooks", reqBody: `{"url":"https://example.com/h"}`, status: 201, contentType: jsonCT, body: `{"id":"wh1","url":"https://example.com/h","eventTypes":[],"description":"","createdAt":1,"enabled":true}`, wantErr: true},
		{name: "webhook forbidden", method: "GET", target: "/webhooks", status: 403, contentType: problemCT, body: problem(403, "forbidden")},
		{name: "webhook list", method: "GET", target: "/webhooks", status: 200, contentType: jsonCT, body: `{"webhooks":[{"id":"wh1","url":"https://example.com/h","eventTypes":["call.ended"],"description":"","createdAt":1,"enabled":false,"disabledReason":"410 Gone"}]}`},
		{name: "webhook not found", method: "GET", target: "/webhooks/wh1", status: 404, contentType: problemCT, body: problem(404, "not_found")},
		{name: "webhook deleted", method: "DELETE", target: "/webhooks/wh1", status: 204},
		{name: "delivery retried", method: "POST", target: "/webhooks/wh1/deliveries/17/retry", status: 202, contentType: jsonCT, body: `{"id":"17","webhookID":"wh1","type":"call.push_requested","status":"pending","attempts":3,"lastStatusCode":0,"lastError":"dial tcp: timeout","nextAttemptAt":5,"createdAt":1,"deliveredAt":0}`},

		{name: "healthz", method: "GET", target: "/healthz", status: 200, contentType: jsonCT, body: `{"status":"ok"}`},
		{name: "readyz down", method: "GET", target: "/readyz", status: 503, contentType: problemCT, header: map[string]string{"Retry-After": "1"}, body: problem(503, "unavailable")},
		{name: "unavailable without Retry-After", method: "POST", target: "/calls", reqBody: `{"invitees":["bob"]}`, status: 503, contentType: problemCT, body: problem(503, "unavailable"), wantErr: true},
		{name: "create call unavailable", method: "POST", target: "/calls", reqBody: `{"invitees":["bob"]}`, status: 503, contentType: problemCT, header: map[string]string{"Retry-After": "1"}, body: problem(503, "unavailable")},
		{name: "spec", method: "GET", target: "/openapi.yaml", status: 200, contentType: "application/yaml", body: string(Spec)},
		{name: "metrics", method: "GET", target: "/metrics", status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8", body: "up 1\n"},
		{name: "demo redirect", method: "GET", target: "/demo?user=alice", status: 301, header: map[string]string{"Location": "/demo/?user=alice"}},
		{name: "demo page", method: "GET", target: "/demo/index.html", status: 200, contentType: "text/html; charset=utf-8", body: "<!doctype html><title>demo</title>"},
		{name: "dev token", method: "POST", target: "/dev/token", reqBody: `{"userID":"alice"}`, status: 200, contentType: jsonCT, body: `{"token":"a.b.c","userID":"alice","expiresAt":1767229200000}`},
		{name: "dev token outside development", method: "POST", target: "/dev/token", reqBody: `{"userID":"alice"}`, status: 404, contentType: problemCT, body: problem(404, "not_found")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := newRequest(tt.method, tt.target, tt.reqBody, nil)
			in, err := v.validateRequest(req)
			if err != nil {
				t.Fatalf("request rejected: %v", err)
			}
			header := http.Header{}
			if tt.contentType != "" {
				header.Set("Content-Type", tt.contentType)
			}
			for k, val := range tt.header {
				header.Set(k, val)
			}
			out := &openapi3filter.ResponseValidationInput{
				RequestValidationInput: in,
				Status:                 tt.status,
				Header:                 header,
				Body:                   io.NopCloser(strings.NewReader(tt.body)),
				Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
			}
			err = openapi3filter.ValidateResponse(context.Background(), out)
			if tt.wantErr && err == nil {
				t.Fatal("response validated; want an error")
			}
			if err != nil {
				t.Logf("rejected: %v", err)
			}
			if !tt.wantErr && err != nil {
				t.Fatalf("response rejected: %v", err)
			}
		})
	}
}

// The documentation-only schemas must accept what the server sends.
func TestDocumentationSchemas(t *testing.T) {
	doc := mustLoad(t)
	tests := []struct {
		schema  string
		value   string
		wantErr bool
	}{
		{schema: "CallInvitationReceivedData", value: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","caller":"alice","inviter":"alice","mode":"general","timeout":90,"createTime":1,"extendedData":"","callUserList":[]}`},
		{schema: "CallInvitationReceivedData", value: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","caller":"alice","mode":"general","timeout":90,"createTime":1,"extendedData":"","callUserList":[]}`, wantErr: true},
		{schema: "CallInvitationTimeoutData", value: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","mode":"advanced"}`},
		{schema: "TokenWillExpireData", value: `{"second":30}`},
		{schema: "TokenWillExpireData", value: `{"second":-1}`, wantErr: true},
		{schema: "RefusedData", value: `{"retry":5000,"reason":"the server holds as many connections as it allows; reconnect later"}`},
		{schema: "RefusedData", value: `{"retry":5000}`, wantErr: true},
		{schema: "CallUserStateChangedData", value: `{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","callUserList":[{"userID":"bob","state":"accepted","inviter":"alice","extendedData":"","updateTime":2}]}`},
		{schema: "WebhookPayload", value: `{"type":"call.ended","timestamp":"2026-01-01T00:00:12Z","data":{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","operatedUserID":"alice","endTime":1,"reason":"caller_offline"}}`},
		{schema: "WebhookPayload", value: `{"type":"call.push_requested","timestamp":"2026-01-01T00:00:12Z","data":{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","userID":"bob","kind":"invitation","pushConfig":{"title":"t"}}}`},
		{schema: "WebhookPayload", value: `{"type":"call.ended","timestamp":"2026-01-01T00:00:12Z","data":{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","operatedUserID":"alice","endTime":1,"reason":"hangup"}}`, wantErr: true},
		{schema: "WebhookPayload", value: `{"type":"call.missed","timestamp":"2026-01-01T00:00:12Z","data":{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","userID":"bob","caller":"alice","inviter":"alice","reason":"timeout","time":1}}`},
		{schema: "WebhookPayload", value: `{"type":"call.missed","timestamp":"2026-01-01T00:00:12Z","data":{"callID":"Zk3vQ9mT2xLp8RwN4bYc7A","userID":"bob","caller":"alice","inviter":"alice","reason":"rejected","time":1}}`, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.schema, func(t *testing.T) {
			ref := doc.Components.Schemas[tt.schema]
			if ref == nil {
				t.Fatalf("schema %s missing", tt.schema)
			}
			var value any
			if err := json.Unmarshal([]byte(tt.value), &value); err != nil {
				t.Fatal(err)
			}
			err := ref.Value.VisitJSON(value)
			if tt.wantErr && err == nil {
				t.Fatal("value validated; want an error")
			}
			if err != nil {
				t.Logf("rejected: %v", err)
			}
			if !tt.wantErr && err != nil {
				t.Fatalf("value rejected: %v", err)
			}
		})
	}
}

type validator struct {
	router routers.Router
}

func newValidator(t *testing.T) *validator {
	t.Helper()
	router, err := legacy.NewRouter(mustLoad(t))
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	return &validator{router: router}
}

func (v *validator) validateRequest(req *http.Request) (*openapi3filter.RequestValidationInput, error) {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		return nil, err
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options:    &openapi3filter.Options{AuthenticationFunc: checkCredentialsPresent},
	}
	return in, openapi3filter.ValidateRequest(context.Background(), in)
}

// checkCredentialsPresent stands in for the server's JWT check: it only
// looks for the credential where the security scheme says it is.
func checkCredentialsPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	req := in.RequestValidationInput.Request
	switch scheme := in.SecurityScheme; scheme.Type {
	case "http":
		if !strings.HasPrefix(req.Header.Get("Authorization"), "Bearer ") {
			return errors.New("no bearer token")
		}
	case "apiKey":
		if req.URL.Query().Get(scheme.Name) == "" {
			return errors.New("no " + scheme.Name)
		}
	default:
		return errors.New("unexpected security scheme " + scheme.Type)
	}
	return nil
}

func mustLoad(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return doc
}

// newRequest builds a request with a bearer token and, when body is not
// empty, a JSON body; header entries override (an empty value removes).
func newRequest(method, target, body string, header map[string]string) *http.Request {
	var r io.Reader
	if body != "" {
		r = bytes.NewBufferString(body)
	}
	req := httptest.NewRequest(method, target, r)
	req.Header.Set("Authorization", "Bearer test-token")
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		if v == "" {
			req.Header.Del(k)
		} else {
			req.Header.Set(k, v)
		}
	}
	return req
}

func parameter(op *openapi3.Operation, in, name string) *openapi3.Parameter {
	for _, p := range op.Parameters {
		if p.Value != nil && p.Value.In == in && p.Value.Name == name {
			return p.Value
		}
	}
	return nil
}
