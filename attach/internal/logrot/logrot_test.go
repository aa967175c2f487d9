package logrot

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// checkRotated checks that path and path.1 … path.keep exist, that nothing
// beyond path.keep does, and that no file exceeds maxBytes.
func checkRotated(t testing.TB, path string, maxBytes int64, keep int) {
	t.Helper()
	for i := 0; i <= keep+1; i++ {
		name := path
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		fi, err := os.Stat(name)
		if i == keep+1 {
			if !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists beyond keep=%d (err %v)", name, keep, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if fi.Size() > maxBytes {
			t.Errorf("%s has %d bytes, max %d", name, fi.Size(), maxBytes)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, perm)
		}
	}
}

// pattern is n bytes that differ from position to position.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

func TestFile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		maxBytes int64
		keep     int
		total    int
		write    int // bytes per Write
	}{
		{"small writes", 100, 3, 1000, 10},
		{"uneven writes", 100, 3, 1000, 7},
		{"writes larger than a file", 100, 2, 1000, 250},
		{"keep none", 100, 0, 450, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "a", "b", "x.log")
			r, err := Open(path, tc.maxBytes, tc.keep)
			if err != nil {
				t.Fatal(err)
			}
			data := pattern(tc.total)
			for off := 0; off < len(data); off += tc.write {
				chunk := data[off:min(off+tc.write, len(data))]
				if n, err := r.Write(chunk); err != nil || n != len(chunk) {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			checkRotated(t, path, tc.maxBytes, tc.keep)
			if fi, err := os.Stat(filepath.Dir(path)); err != nil {
				t.Error(err)
			} else if fi.Mode().Perm() != 0o700 {
				t.Errorf("log dir mode %v, want 0700", fi.Mode().Perm())
			}
			// Oldest to newest, the kept files are the tail of what was written.
			var got []byte
			for i := tc.keep; i >= 0; i-- {
				name := path
				if i > 0 {
					name += "." + strconv.Itoa(i)
				}
				b, err := os.ReadFile(name)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, b...)
			}
			if want := data[len(data)-len(got):]; !bytes.Equal(got, want) {
				t.Errorf("kept files hold %q, want the tail %q", got, want)
			}
			if limit := int64(tc.keep+1) * tc.maxBytes; int64(len(got)) > limit {
				t.Errorf("kept %d bytes, more than %d", len(got), limit)
			}
		})
	}
}

func TestFileAppendsAndCloses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	r, err := Open(path, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Write(pattern(50)); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := r.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Write after Close = %v, want ErrClosed", err)
	}

	r, err = Open(path, 100, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Write(pattern(60)); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int64{path + ".1": 100, path: 10} {
		if fi, err := os.Stat(name); err != nil {
			t.Error(err)
		} else if fi.Size() != want {
			t.Errorf("%s has %d bytes, want %d", name, fi.Size(), want)
		}
	}
}

func TestFileBadLimits(t *testing.T) {
	for _, lim := range [][2]int64{{0, 1}, {-1, 1}, {10, -1}} {
		if _, err := Open(filepath.Join(t.TempDir(), "x"), lim[0], int(lim[1])); err == nil {
			t.Errorf("Open(max %d, keep %d) succeeded", lim[0], lim[1])
		}
	}
}

func TestFileConcurrentWrites(t *testing.T) {
	const (
		writers = 8
		writes  = 200
		line    = "0123456789abcdefghijklmnopqrstuvwxyz\n"
		limit   = 1000
	)
	path := filepath.Join(t.TempDir(), "x.log")
	keep := writers*writes*len(line)/limit + 2 // enough that nothing is dropped
	r, err := Open(path, limit, keep)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			for range writes {
				if _, err := r.Write([]byte(line)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	var all []byte
	for i := keep; i >= 0; i-- {
		name := path
		if i > 0 {
			name += "." + strconv.Itoa(i)
		}
		b, err := os.ReadFile(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > limit {
			t.Errorf("%s has %d bytes", name, len(b))
		}
		all = append(all, b...)
	}
	// Writes are atomic: joined back, the files are whole lines only.
	if want := bytes.Repeat([]byte(line), writers*writes); !bytes.Equal(all, want) {
		t.Errorf("files hold %d bytes, not %d whole lines", len(all), writers*writes)
	}
}

func TestEnforceCap(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	mk := func(rel string, size int, age int) string {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, make([]byte, size), 0o600); err != nil {
			t.Fatal(err)
		}
		mt := base.Add(time.Duration(age) * time.Minute)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		return p
	}
	oldestOpen := mk("svc1/r1.log", 100, 0) // oldest, but still open
	b := mk("svc1/r1.log.1", 100, 1)
	c := mk("svc2/r2.log.2", 100, 2)
	d := mk("svc2/r2.log.1", 100, 3)
	e := mk("svc2/r2.log", 100, 4)
	if err := os.Symlink(e, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	freed, err := EnforceCap(dir, 250, map[string]bool{oldestOpen: true})
	if err != nil || freed != 300 {
		t.Fatalf("EnforceCap = %d, %v; want 300 freed", freed, err)
	}
	for p, want := range map[string]bool{oldestOpen: true, b: false, c: false, d: false, e: true} {
		_, err := os.Stat(p)
		if got := err == nil; got != want {
			t.Errorf("%s exists = %v, want %v", p, got, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dir, "link")); err != nil {
		t.Errorf("symlink touched: %v", err)
	}

	// Under the cap: nothing to do.
	if freed, err := EnforceCap(dir, 200, nil); err != nil || freed != 0 {
		t.Errorf("under the cap: %d, %v", freed, err)
	}
	// Skipped files alone over the cap: everything else goes, they stay.
	freed, err = EnforceCap(dir, 50, map[string]bool{oldestOpen: true})
	if err != nil || freed != 100 {
		t.Errorf("skipped over cap: %d, %v; want 100 freed", freed, err)
	}
	if _, err := os.Stat(oldestOpen); err != nil {
		t.Errorf("skipped file deleted: %v", err)
	}
	if _, err := os.Stat(e); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s should be gone: %v", e, err)
	}
	// A missing dir holds nothing.
	if freed, err := EnforceCap(filepath.Join(dir, "nope"), 0, nil); err != nil || freed != 0 {
		t.Errorf("missing dir: %d, %v", freed, err)
	}
}

func ExampleOpen() {
	dir, _ := os.MkdirTemp("", "example")
	defer os.RemoveAll(dir)
	r, _ := Open(filepath.Join(dir, "replica.log"), 10, 2)
	fmt.Fprint(r, "0123456789abcdefghij-")
	r.Close()
	for _, name := range []string{"replica.log.2", "replica.log.1", "replica.log"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		fmt.Printf("%s: %s\n", name, b)
	}
	// Output:
	// replica.log.2: 0123456789
	// replica.log.1: abcdefghij
	// replica.log: -
}
