package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

// profiler takes CPU profiles of the server (its -debug-addr listener) while a phase runs.
// A nil profiler takes none.
type profiler struct {
	addr, dir string
}

func newProfiler(dir string) (*profiler, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	return &profiler{addr: addr, dir: dir}, nil
}

// start begins a CPU profile of up to d (at least 1 s); the returned function waits for it and
// writes it to DIR/name.pprof.
func (p *profiler) start(ctx context.Context, name string, d time.Duration) (wait func() error) {
	if p == nil {
		return func() error { return nil }
	}
	secs := max(1, int(d.Seconds()))
	errc := make(chan error, 1)
	go func() {
		url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.addr, secs)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			errc <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			errc <- fmt.Errorf("profiling %s: %w", name, err)
			return
		}
		defer resp.Body.Close()
		path := filepath.Join(p.dir, name+".pprof")
		f, err := os.Create(path)
		if err != nil {
			errc <- err
			return
		}
		_, err = io.Copy(f, resp.Body)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("profiling %s: %s", name, resp.Status)
		}
		if err == nil {
			step("wrote %s", path)
		}
		errc <- err
	}()
	return func() error { return <-errc }
}
