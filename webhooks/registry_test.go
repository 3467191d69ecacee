package webhooks_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"callsig/calls"
	"callsig/webhooks"
)

func TestRegistryCreateValidates(t *testing.T) {
	r := newRig(t)
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, Resolver: fakeResolver{"hooks.example.com": {"93.184.216.34"}}})
	ctx := context.Background()

	e, err := reg.Create(ctx, webhooks.CreateInput{URL: "https://hooks.example.com/x",
		EventTypes: []calls.HookType{calls.HookCallEnded, calls.HookCallCreated, calls.HookCallEnded}, Description: strings.Repeat("é", 256)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(e.ID, "wh_") || !strings.HasPrefix(e.Secret, "whsec_") || !e.Enabled || e.CreatedAt != epoch.UnixMilli() ||
		!slices.Equal(e.EventTypes, []calls.HookType{calls.HookCallEnded, calls.HookCallCreated}) {
		t.Fatalf("created %+v", e)
	}
	got, err := reg.Get(ctx, e.ID)
	if err != nil || got.Secret != "" || got.URL != e.URL || !slices.Equal(got.EventTypes, e.EventTypes) {
		t.Fatalf("get %+v %v", got, err)
	}

	for _, in := range []webhooks.CreateInput{
		{URL: "http://localhost/x"},
		{URL: "gopher://hooks.example.com/"},
		{URL: "https://hooks.example.com:99999/x"},
		{URL: "https://hooks.example.com/x", EventTypes: []calls.HookType{"call.nope"}},
		{URL: "https://hooks.example.com/x", Description: strings.Repeat("x", 257)},
	} {
		if _, err := reg.Create(ctx, in); calls.CodeOf(err) != calls.CodeInvalidRequest {
			t.Errorf("%+v: %v", in, err)
		}
	}
	if _, err := reg.Get(ctx, "wh_nope"); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("unknown id: %v", err)
	}
	if _, err := reg.Retry(ctx, e.ID, "12"); !errors.Is(err, calls.ErrNotFound) {
		t.Errorf("unknown delivery: %v", err)
	}
	if _, err := reg.Deliveries(ctx, e.ID, webhooks.DeliveryQuery{Status: "lost"}); calls.CodeOf(err) != calls.CodeInvalidRequest {
		t.Errorf("bad status filter: %v", err)
	}
}

func TestRegistryConfigure(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	dns := fakeResolver{"hooks.example.com": {"93.184.216.34"}}
	reg := webhooks.NewRegistry(r.store, webhooks.RegistryOptions{Clock: r.clock, Resolver: dns})
	secret := webhooks.NewSecret()

	for _, c := range []struct{ url, secret string }{
		{"https://hooks.example.com/x", ""},
		{"", secret},
		{"https://hooks.example.com/x", "whsec_c2hvcnQ="},
		{"http://10.0.0.1/x", secret},
		{"ftp://hooks.example.com/x", secret},
		{"https://hooks.example.com:0/x", secret},
	} {
		if err := reg.Configure(ctx, c.url, c.secret); err == nil {
			t.Errorf("Configure(%q, %q) accepted", c.url, c.secret)
		}
	}
	// A name that does not resolve at boot does not stop the server.
	if err := reg.Configure(ctx, "https://not-yet.example.com/x", secret); err != nil {
		t.Fatalf("unresolvable configured host: %v", err)
	}
	if err := reg.Configure(ctx, "https://hooks.example.com/x", strings.TrimPrefix(secret, "whsec_")); err != nil {
		t.Fatal(err)
	}
	e, err := r.store.WebhookEndpoint(ctx, webhooks.ConfiguredID)
	if err != nil || e.URL != "https://hooks.example.com/x" || e.Secret != secret || !e.Enabled || len(e.EventTypes) != 0 {
		t.Fatalf("configured endpoint %+v %v", e, err)
	}
	if list, _ := reg.List(ctx); len(list) != 1 {
		t.Fatalf("endpoints %+v", list)
	}
	if err := reg.Configure(ctx, "", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := reg.Get(ctx, webhooks.ConfiguredID); !errors.Is(err, calls.ErrNotFound) {
		t.Fatalf("after unsetting: %v", err)
	}
	if err := reg.Configure(ctx, "", ""); err != nil {
		t.Fatalf("unsetting twice: %v", err)
	}
}
