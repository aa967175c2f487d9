//go:build unix

package proctest

import (
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runMode is the fake replica. It returns its exit code. Modes:
//
//	sleep            prints its working dir, env size and "ready"; exits 0 on SIGTERM
//	ignore-term      prints "ready" and ignores SIGTERM
//	watch            prints "ready", then "term"/"winch" for each SIGTERM/SIGWINCH, and carries on
//	crash            prints "boom" to stderr and exits 3
//	spam             writes SpamBytesEnv bytes of lines, then "done"; exits 0 on SIGTERM
//	grandchild       starts itself in "sleep" mode in its group, writes that pid to PidfileEnv, prints "ready"; exits 0 on SIGTERM
//	grandchild-exit  the same, but then exits 3 at once
func runMode(mode string) int {
	switch mode {
	case "sleep":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		wd, _ := os.Getwd()
		fmt.Printf("cwd=%s\nenv=%d\nready\n", wd, len(os.Environ()))
		return waitSignal(term, 0)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fmt.Println("ready")
		return waitSignal(nil, 0)
	case "watch":
		sigs := make(chan os.Signal, 8)
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGWINCH)
		fmt.Println("ready")
		deadline := time.After(MaxLife)
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGTERM {
					fmt.Println("term")
				} else {
					fmt.Println("winch")
				}
			case <-deadline:
				return 9
			}
		}
	case "crash":
		fmt.Fprintln(os.Stderr, "boom")
		return 3
	case "spam":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		n, _ := strconv.Atoi(os.Getenv(SpamBytesEnv))
		if err := spam(n); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("done")
		return waitSignal(term, 0)
	case "grandchild", "grandchild-exit":
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		gc := exec.Command(self)
		gc.Env = []string{HelperEnv + "=sleep", "GORACE=atexit_sleep_ms=0"}
		if d := os.Getenv("GOCOVERDIR"); d != "" {
			gc.Env = append(gc.Env, "GOCOVERDIR="+d)
		}
		gc.Stdout, gc.Stderr = os.Stdout, os.Stderr
		if err := gc.Start(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		if err := writeFileAtomic(os.Getenv(PidfileEnv), strconv.Itoa(gc.Process.Pid)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		fmt.Println("ready")
		if mode == "grandchild-exit" {
			return 3
		}
		return waitSignal(term, 0)
	}
	fmt.Fprintf(os.Stderr, "unknown helper mode %q\n", mode)
	return 2
}

// waitSignal blocks until sig delivers (exit code) or MaxLife passes.
func waitSignal(sig <-chan os.Signal, code int) int {
	select {
	case <-sig:
		return code
	case <-time.After(MaxLife):
		return 9
	}
}

func spam(n int) error {
	line := []byte(strings.Repeat("x", 99) + "\n")
	for n > 0 {
		k := min(n, len(line))
		chunk := slices.Clone(line[len(line)-k:])
		if _, err := os.Stdout.Write(chunk); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

func writeFileAtomic(path, s string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
