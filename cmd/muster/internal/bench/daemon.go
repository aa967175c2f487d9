package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// daemon is a Muster daemon (`muster broker`, `muster attach`) the bench
// runs as a child process, so that its CPU and memory are its own.
type daemon struct {
	name   string
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's, once exited is closed

	mu      sync.Mutex
	tail    []string // the last lines of its stderr
	httpURL string   // its --http endpoint, from "muster <name>: http URL (…)"
	ready   chan struct{}
	isReady bool
}

const tailLines = 20

// startDaemon runs `exe args…` with env added to the bench's environment
// and waits until a line of its stderr contains readyMark, it exits, or
// ctx ends.
func startDaemon(ctx context.Context, name, exe string, args, env []string, readyMark string) (_ *daemon, retErr error) {
	d := &daemon{name: name, exited: make(chan struct{}), ready: make(chan struct{})}
	d.cmd = exec.Command(exe, args...)
	d.cmd.Env = append(os.Environ(), env...)
	stderr, err := d.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer func() {
		if retErr != nil {
			d.stop(5 * time.Second)
		}
	}()
	scanned := make(chan struct{})
	go func() { defer close(scanned); d.read(stderr, readyMark) }()
	go func() {
		<-scanned // Wait closes the pipe: read it to the end first
		d.err = d.cmd.Wait()
		close(d.exited)
	}()
	t := time.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case <-d.ready:
		return d, nil
	case <-d.exited:
		return nil, fmt.Errorf("%s exited at start (%v): %s", name, d.err, d.stderr())
	case <-t.C:
		return nil, fmt.Errorf("%s not ready within %v: %s", name, startTimeout, d.stderr())
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// startTimeout bounds a daemon's start.
const startTimeout = 30 * time.Second

// read follows the daemon's stderr: it keeps the last lines, notes its
// HTTP endpoint and marks it ready.
func (d *daemon) read(r io.Reader, readyMark string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	httpPrefix := "muster " + d.name + ": http "
	for sc.Scan() {
		line := sc.Text()
		d.mu.Lock()
		d.tail = append(d.tail, line)
		if len(d.tail) > tailLines {
			d.tail = d.tail[1:]
		}
		if rest, ok := strings.CutPrefix(line, httpPrefix); ok && d.httpURL == "" {
			d.httpURL, _, _ = strings.Cut(rest, " ")
		}
		if !d.isReady && strings.Contains(line, readyMark) {
			d.isReady = true
			close(d.ready)
		}
		d.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// stderr is the last lines the daemon wrote, for error messages.
func (d *daemon) stderr() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return strings.Join(d.tail, "\n")
}

func (d *daemon) pid() int { return d.cmd.Process.Pid }

// alive reports an error if the daemon has exited.
func (d *daemon) alive() error {
	select {
	case <-d.exited:
		return fmt.Errorf("%s exited (%v): %s", d.name, d.err, d.stderr())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to grace for the daemon to exit, then
// kills it. It reports an exit other than a clean one after SIGTERM.
func (d *daemon) stop(grace time.Duration) error {
	select {
	case <-d.exited:
		return nil
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-d.exited:
		if d.err != nil {
			return fmt.Errorf("%s: %w: %s", d.name, d.err, d.stderr())
		}
		return nil
	case <-t.C:
		_ = d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("%s did not stop within %v after SIGTERM; killed", d.name, grace)
	}
}

// heap is the daemon's live Go heap: HeapAlloc right after a garbage
// collection, read from its /debug/pprof/heap?gc=1 (it runs with --http
// and --pprof).
func (d *daemon) heap(ctx context.Context) (uint64, error) {
	d.mu.Lock()
	u := d.httpURL
	d.mu.Unlock()
	if u == "" {
		return 0, errors.New(d.name + ": no HTTP endpoint")
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u+"/debug/pprof/heap?debug=1&gc=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: heap profile: %s", d.name, resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			return strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s: no HeapAlloc in its heap profile", d.name)
}
