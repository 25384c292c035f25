// Package ingest loads existing FHIR data into cartreg in bulk, for a registry's initial
// migration: NDJSON files (a Bulk Data export, one resource per line) and Bundle files, either
// plain or gzipped.
//
// Everything goes through the same validation and indexing as the REST API. NDJSON lines
// are parsed by several workers at once, since google/fhir's parsing is the main cost, and
// written in batches, each batch one database transaction that also records how far the file
// has got (import_progress). An import that fails or is interrupted therefore resumes at the
// first uncommitted line, and a finished file is skipped, so nothing is imported twice.
// NDJSON resources keep their ids (stored as update-as-create does), and their references
// are not checked: an export lists its types in any order. Bundles are processed exactly as
// POST /fhir processes them, by the same fhir.BundleProcessor.
package ingest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/cartreg/cartreg/fhir"
)

// Importer loads files into the store.
type Importer struct {
	Store   *fhir.Store
	Bundles *fhir.BundleProcessor // for Bundle files
	// BatchSize is how many NDJSON resources go into one transaction.
	BatchSize int
	// Workers parse in parallel; 0 means one per CPU.
	Workers int
	// Progress, if set, is told of every committed batch: the file and how many resources.
	Progress func(file string, resources int)
}

// Result says what importing one file did.
type Result struct {
	File      string
	Resources int  // imported now
	Skipped   int  // lines or Bundles committed by an earlier run
	Complete  bool // the whole file was imported before this run
}

// LineError is an NDJSON line that could not be imported.
type LineError struct {
	File string
	Line int
	Err  error
}

func (e *LineError) Error() string { return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err) }
func (e *LineError) Unwrap() error { return e.Err }

// ImportFile imports one file, by its name: *.ndjson[.gz] line by line, *.json[.gz] as a
// Bundle.
func (im *Importer) ImportFile(ctx context.Context, path string) (Result, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Result{}, err
	}
	name := strings.TrimSuffix(strings.ToLower(abs), ".gz")
	switch {
	case strings.HasSuffix(name, ".ndjson"):
		return im.importNDJSON(ctx, abs)
	case strings.HasSuffix(name, ".json"):
		return im.importBundle(ctx, abs)
	}
	return Result{}, fmt.Errorf("%s: not .ndjson, .ndjson.gz, .json or .json.gz", path)
}

func open(path string) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if !strings.HasSuffix(strings.ToLower(path), ".gz") {
		return f, nil
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, f}, nil
}

// progress is a file's row in import_progress.
type progress struct {
	done      int64
	prefix    string
	completed bool
}

func (im *Importer) loadProgress(ctx context.Context, source string) (progress, error) {
	var p progress
	err := im.Store.DB().QueryRow(ctx, `SELECT done, prefix_sha256, completed FROM import_progress WHERE source = $1`, source).
		Scan(&p.done, &p.prefix, &p.completed)
	if errors.Is(err, pgx.ErrNoRows) {
		return progress{}, nil
	}
	return p, err
}

func saveProgress(ctx context.Context, tx pgx.Tx, source string, p progress) error {
	_, err := tx.Exec(ctx, `INSERT INTO import_progress (source, done, prefix_sha256, completed) VALUES ($1, $2, $3, $4)
		ON CONFLICT (source) DO UPDATE SET done = excluded.done, prefix_sha256 = excluded.prefix_sha256,
		completed = excluded.completed, updated_at = now()`, source, p.done, p.prefix, p.completed)
	return err
}

// line is one NDJSON line, numbered from 1.
type line struct {
	number int
	raw    []byte
}

// batch is a run of lines, parsed by a worker; result is closed when parsed.
type batch struct {
	lines     []line
	resources []*fhir.Resource
	err       error
	end       int    // number of the last line
	prefix    string // digest of the file up to and including the last line
	last      bool
	result    chan struct{}
}

func (im *Importer) importNDJSON(ctx context.Context, path string) (Result, error) {
	res := Result{File: path}
	prev, err := im.loadProgress(ctx, path)
	if err != nil {
		return res, err
	}
	in, err := open(path)
	if err != nil {
		return res, err
	}
	defer func() { in.Close() }()
	reader := bufio.NewReaderSize(in, 1<<20)
	digest := sha256.New()

	// Skip what an earlier run committed, if the file is still the same up to there.
	start := 0
	if prev.done > 0 {
		sum, err := readPrefix(reader, digest, prev.done)
		if err != nil {
			return res, err
		}
		if sum == prev.prefix {
			start, res.Skipped, res.Complete = int(prev.done), int(prev.done), prev.completed
		} else { // changed since: start over (ids make the re-import an update, not a copy)
			in.Close()
			if in, err = open(path); err != nil {
				return res, err
			}
			reader, digest = bufio.NewReaderSize(in, 1<<20), sha256.New()
		}
	}
	if res.Complete {
		return res, nil
	}

	size := im.BatchSize
	if size <= 0 {
		size = 500
	}
	workers := im.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// reader -> workers (parse) -> this goroutine (write, in file order)
	toParse := make(chan *batch, workers*2)
	ordered := make(chan *batch, workers*2)
	readErr := make(chan error, 1)
	go func() {
		defer close(toParse)
		defer close(ordered)
		n := start
		for {
			b := &batch{result: make(chan struct{})}
			for len(b.lines) < size {
				raw, err := reader.ReadBytes('\n')
				if len(bytes.TrimSpace(raw)) > 0 {
					n++
					digest.Write(raw)
					b.lines = append(b.lines, line{number: n, raw: raw})
				} else if len(raw) > 0 {
					n++
					digest.Write(raw)
				}
				if err == io.EOF {
					b.last = true
					break
				}
				if err != nil {
					readErr <- fmt.Errorf("%s: reading: %w", path, err)
					return
				}
			}
			b.end, b.prefix = n, hex.EncodeToString(digest.Sum(nil))
			select {
			case toParse <- b:
			case <-ctx.Done():
				return
			}
			select {
			case ordered <- b:
			case <-ctx.Done():
				return
			}
			if b.last {
				readErr <- nil
				return
			}
		}
	}()
	for w := 0; w < workers; w++ {
		go func() {
			for b := range toParse {
				b.resources, b.err = parseLines(path, b.lines)
				close(b.result)
			}
		}()
	}

	for b := range ordered {
		select {
		case <-b.result:
		case <-ctx.Done():
			return res, ctx.Err()
		}
		if b.err != nil {
			return res, b.err
		}
		err := im.Store.InTx(ctx, func(tx pgx.Tx) error {
			if len(b.resources) > 0 {
				if _, err := im.Store.PutBatch(ctx, tx, cloneAll(b.resources)); err != nil {
					return err
				}
			}
			return saveProgress(ctx, tx, path, progress{done: int64(b.end), prefix: b.prefix, completed: b.last})
		})
		if err != nil {
			return res, fmt.Errorf("%s: lines up to %d: %w", path, b.end, err)
		}
		res.Resources += len(b.resources)
		if im.Progress != nil {
			im.Progress(path, len(b.resources))
		}
	}
	if err := <-readErr; err != nil {
		return res, err
	}
	return res, nil
}

// readPrefix reads the first n lines into digest and returns the digest.
func readPrefix(r *bufio.Reader, digest hash.Hash, n int64) (string, error) {
	for read := int64(0); read < n; {
		raw, err := r.ReadBytes('\n')
		if len(raw) > 0 {
			digest.Write(raw)
			read++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(digest.Sum(nil)), nil
}

// parseLines validates each line as a resource with an id of its own.
func parseLines(path string, lines []line) ([]*fhir.Resource, error) {
	out := make([]*fhir.Resource, 0, len(lines))
	for _, l := range lines {
		r, err := fhir.Parse(l.raw)
		if err != nil {
			return nil, &LineError{File: path, Line: l.number, Err: err}
		}
		if r.ID == "" {
			r.ID = fhir.NewID()
		}
		out = append(out, r)
	}
	return out, nil
}

// cloneAll copies resources, so a retried transaction writes them as parsed.
func cloneAll(rs []*fhir.Resource) []*fhir.Resource {
	out := make([]*fhir.Resource, len(rs))
	for i, r := range rs {
		out[i] = r.Clone()
	}
	return out
}

// importBundle processes a Bundle file as POST /fhir would, and records it as done in the
// same transaction when it is a transaction Bundle.
func (im *Importer) importBundle(ctx context.Context, path string) (Result, error) {
	res := Result{File: path}
	in, err := open(path)
	if err != nil {
		return res, err
	}
	raw, err := io.ReadAll(in)
	in.Close()
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	sum := sha256.Sum256(raw)
	digest := hex.EncodeToString(sum[:])
	prev, err := im.loadProgress(ctx, path)
	if err != nil {
		return res, err
	}
	if prev.completed && prev.prefix == digest {
		res.Skipped, res.Complete = 1, true
		return res, nil
	}
	n, err := im.Bundles.Import(ctx, raw, func(tx pgx.Tx) error {
		return saveProgress(ctx, tx, path, progress{done: 1, prefix: digest, completed: true})
	})
	if err != nil {
		return res, fmt.Errorf("%s: %w", path, err)
	}
	res.Resources = n
	if im.Progress != nil {
		im.Progress(path, n)
	}
	return res, nil
}
