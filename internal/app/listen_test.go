package app

import "testing"

// Development mode mints tokens for anyone, so without an explicit address
// it listens on loopback only; an address given by flag or environment,
// or a configured secret, listens where configured.
func TestListenAddr(t *testing.T) {
	secret := "a-production-secret-0123456789abcdef"
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"development, no address", nil, nil, "127.0.0.1:8080"},
		{"development, address by flag", []string{"-addr", "0.0.0.0:8080"}, nil, "0.0.0.0:8080"},
		{"development, address by environment", nil, map[string]string{"CALLSIG_ADDR": ":9000"}, ":9000"},
		{"configured secret, no address", nil, map[string]string{"CALLSIG_JWT_SECRET": secret}, ":8080"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newTestApp(t, tt.env, tt.args...)
			defer a.Close()
			if got := a.ListenAddr(); got != tt.want {
				t.Errorf("ListenAddr = %q, want %q", got, tt.want)
			}
			if got := a.Server().Addr; got != tt.want {
				t.Errorf("Server().Addr = %q, want %q", got, tt.want)
			}
		})
	}
}
