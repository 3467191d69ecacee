package db

import (
	"strings"
	"testing"
	"testing/fstest"
)

// Migrations sorts by number, not by name, and refuses a file whose name
// has no version or repeats one, so no backend can apply a schema change
// twice or out of order. (The runner itself is exercised, with a real
// database, by each backend's tests.)
func TestMigrationsAreNumbered(t *testing.T) {
	ok := fstest.MapFS{
		"m/10_c.sql":    {Data: []byte("c")},
		"m/2_b.sql":     {Data: []byte("b")},
		"m/0001_a.sql":  {Data: []byte("a")},
		"m/README.md":   {Data: []byte("not a migration")},
		"other/3_x.sql": {Data: []byte("another directory")},
	}
	list, err := Migrations(ok, "m")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range list {
		got = append(got, m.Name+"="+m.SQL)
	}
	if strings.Join(got, " ") != "0001_a.sql=a 2_b.sql=b 10_c.sql=c" {
		t.Errorf("Migrations = %v, want 1, 2, 10 in that order", got)
	}
	for name, bad := range map[string]fstest.MapFS{
		"no version": {"m/init.sql": {}},
		"zero":       {"m/0_a.sql": {}},
		"duplicate":  {"m/1_a.sql": {}, "m/0001_b.sql": {}},
	} {
		if _, err := Migrations(bad, "m"); err == nil {
			t.Errorf("%s: Migrations accepted %v", name, bad)
		}
	}
}
