package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	gotoken "go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// `go run ./cmd/api` is the README's first command, and developers run it
// on their own machines: the server must build for macOS and Windows too,
// whatever Linux-only system calls the rest of the repository makes
// (those live in files built for Unix or Linux only, beside a fallback).
//
// It type-checks the server as `GOOS=… CGO_ENABLED=0 go build` would see
// it (the files go list picks for that platform), rather than building
// it: with an empty build cache (a fresh clone on a new machine) a cross
// build compiles the standard library and every dependency again, about
// 100 CPU-seconds per platform and 4 minutes of the suite's first run on
// two cores, and 7 s with a warm cache; the type check takes 3 s either
// way. Each of this module's packages is checked whole, function bodies
// included (where the Linux-only calls would be); the standard library
// and the dependencies only as far as their declarations, which they keep
// portable themselves. A link error, which a type check cannot see, is not
// something a portable Go program without cgo gets.
func TestServerBuildsForMacOSAndWindows(t *testing.T) {
	t.Parallel()
	for _, goos := range []string{"darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			t.Parallel()
			// A process of its own: a check holds every package it reads
			// until it ends.
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "CALLSIG_TEST_TYPECHECK="+goos)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("type check of ./cmd/api for GOOS=%s: %v\n%s", goos, err, out)
			}
		})
	}
}

// typeCheckMain is TestMain's branch for CALLSIG_TEST_TYPECHECK: it
// type-checks this package and the module's packages it imports for that
// GOOS, and exits.
func typeCheckMain(goos string) {
	if err := typeCheck(goos); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

func typeCheck(goos string) error {
	// Every package the server imports, as built for goos: its files
	// for that platform and where its imports resolve (ImportMap: the
	// standard library's vendored packages).
	list := exec.Command("go", "list", "-deps", "-json=ImportPath,Dir,GoFiles,ImportMap,Module", ".")
	list.Env = append(os.Environ(), "GOOS="+goos, "GOARCH=amd64", "CGO_ENABLED=0", "GOFLAGS=")
	out, err := list.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return fmt.Errorf("go list: %w", err)
	}
	c := &checker{fset: gotoken.NewFileSet(), pkgs: map[string]*listed{}, byDir: map[string]*listed{}, done: map[string]*types.Package{}}
	var order []*listed // dependencies first
	for dec := json.NewDecoder(bytes.NewReader(out)); ; {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			return fmt.Errorf("go list: %w", err)
		}
		c.pkgs[p.ImportPath], c.byDir[p.Dir] = &p, &p
		order = append(order, &p)
	}
	var errs []error
	for _, p := range order {
		if p.Module != nil && p.Module.Path == "callsig" {
			if _, err := c.check(p, true); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// listed is what go list says of a package.
type listed struct {
	ImportPath, Dir string
	GoFiles         []string
	ImportMap       map[string]string
	Module          *struct{ Path string }
}

// checker type-checks packages from source: this module's whole, the
// others (the standard library, the dependencies) by their declarations.
type checker struct {
	fset  *gotoken.FileSet
	pkgs  map[string]*listed // by import path
	byDir map[string]*listed
	done  map[string]*types.Package // imported, by import path
}

func (c *checker) Import(path string) (*types.Package, error) { return c.ImportFrom(path, "", 0) }

func (c *checker) ImportFrom(path, dir string, _ types.ImportMode) (*types.Package, error) {
	if path == "unsafe" {
		return types.Unsafe, nil
	}
	if from := c.byDir[dir]; from != nil && from.ImportMap[path] != "" {
		path = from.ImportMap[path]
	}
	if pkg := c.done[path]; pkg != nil {
		return pkg, nil
	}
	p := c.pkgs[path]
	if p == nil {
		return nil, fmt.Errorf("%s is not among the packages go list gave", path)
	}
	pkg, err := c.check(p, false)
	if err != nil {
		return nil, err
	}
	c.done[path] = pkg
	return pkg, nil
}

// check type-checks p, function bodies included when whole.
func (c *checker) check(p *listed, whole bool) (*types.Package, error) {
	var files []*ast.File
	for _, name := range p.GoFiles {
		f, err := parser.ParseFile(c.fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, err
		}
		files = append(files, f)
	}
	var errs []error
	conf := types.Config{Importer: c, IgnoreFuncBodies: !whole, Error: func(err error) { errs = append(errs, err) },
		Sizes: types.SizesFor("gc", "amd64")}
	pkg, _ := conf.Check(p.ImportPath, c.fset, files, nil)
	if len(errs) > 0 {
		return nil, fmt.Errorf("%s: %w", p.ImportPath, errors.Join(errs...))
	}
	return pkg, nil
}
