//go:build unix

package attach

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/musterhq/muster/attach/internal/proc"
	"github.com/musterhq/muster/attach/internal/proctest"
	"github.com/musterhq/muster/broker/proto"
	"github.com/musterhq/muster/examples/demo"
	"github.com/musterhq/muster/internal/natsconn"
	"github.com/musterhq/muster/worker"
)

// workerHelper runs the test binary as a real Muster replica (the
// attach manager sets MUSTER_* as for any replica). Modes:
//
//	worker-echo        demo.Echo
//	worker-crash       exits 3 before registering
//	worker-crash-mid   serves; the message "crash" makes it exit 2 mid-conversation
//	worker-hang        registers, then never heartbeats again while it lives, but answers PING
//	worker-freeze      registers, then stops itself (SIGSTOP): answers nothing
//	worker-silent      never registers (start timeout)
//	worker-fail-until  exits 1 before registering until the file $ATTACH_TEST_MARKER exists, then serves demo.Echo
//	worker-grandchild  starts a sleeping grandchild, then serves demo.Echo
//	worker-ignore-term serves, but ignores SIGTERM
//	worker-no-arm      demo.Echo as a replica program that cannot be armed (it ignores MUSTER_STANDBY_ARM) and, like a C or shell program, dies of SIGUSR2 (exit 12)
//	manager            runs an attach manager (see managerHelper)
func workerHelper(mode string) (int, bool) {
	if dir := os.Getenv(pidDirEnv); dir != "" && mode != "manager" {
		recordHelper(dir)
	}
	run := func(h worker.HandlerFunc, opts ...worker.Option) int {
		if err := worker.Run(context.Background(), h, opts...); err != nil {
			fmt.Fprintln(os.Stderr, "worker:", err)
			return 1
		}
		return 0
	}
	switch mode {
	case "worker-echo":
		return run(demo.Echo), true
	case "worker-crash":
		fmt.Fprintln(os.Stderr, "worker-crash: cannot open database")
		return 3, true
	case "worker-crash-mid":
		return run(func(ctx context.Context, c *worker.Conv) error {
			for {
				m, err := c.Receive(ctx)
				if err != nil {
					return nil
				}
				if string(m.Data) == "crash" {
					os.Exit(2)
				}
				if err := c.Reply(m.Data); err != nil {
					return err
				}
			}
		}), true
	case "worker-hang":
		return run(demo.Echo, worker.WithHeartbeat(30*time.Second)), true
	case "worker-freeze":
		return run(demo.Echo, worker.WithHeartbeat(30*time.Second), worker.WithReadyFunc(func() {
			_ = syscall.Kill(os.Getpid(), syscall.SIGSTOP)
		})), true
	case "worker-fail-until":
		if _, err := os.Stat(os.Getenv(markerEnv)); err != nil {
			fmt.Fprintln(os.Stderr, "worker-fail-until: not fixed yet:", err)
			return 1, true
		}
		return run(demo.Echo), true
	case "worker-silent":
		time.Sleep(proctest.MaxLife)
		return 0, true
	case "worker-grandchild":
		gc := exec.Command(os.Args[0], "-test.run=^$")
		gc.Env = append(os.Environ(), proctest.HelperEnv+"=sleep")
		if err := gc.Start(); err != nil {
			return 1, true
		}
		if f := os.Getenv(proctest.PidfileEnv); f != "" {
			_ = os.WriteFile(f, []byte(fmt.Sprint(gc.Process.Pid)), 0o600)
		}
		return run(demo.Echo), true
	case "worker-ignore-term":
		signal.Ignore(syscall.SIGTERM)
		return run(demo.Echo, worker.WithSignals(false)), true
	case "worker-no-arm":
		_ = os.Unsetenv(proto.EnvStandbyArm)
		usr2 := make(chan os.Signal, 1)
		signal.Notify(usr2, syscall.SIGUSR2)
		go func() { <-usr2; os.Exit(12) }()
		return run(demo.Echo), true
	case "manager":
		return managerHelper(), true
	}
	return 0, false
}

// managerHelper runs an attach manager in this process, for tests that
// kill a manager: config from ATTACH_TEST_CONFIG, NATS from MUSTER_URL.
// It prints "ready" once started and stops on SIGTERM.
func managerHelper() int {
	cfg, err := LoadConfig(os.Getenv("ATTACH_TEST_CONFIG"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	conn := natsconn.FromEnv(nil)
	nc, err := conn.Connect()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m, err := Start(ctx, nc, cfg, Options{Conn: conn})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("ready")
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	select {
	case <-term:
	case <-time.After(proctest.MaxLife):
	}
	m.Shutdown(context.Background())
	return 0
}

// markerEnv names the file worker-fail-until waits for.
const markerEnv = "ATTACH_TEST_MARKER"

// pidDirEnv names a directory where every worker helper started by a
// manager records its PID and start time, so TestMain can check that none
// outlives the tests.
const pidDirEnv = "ATTACH_TEST_PIDDIR"

func recordHelper(dir string) {
	pid := os.Getpid()
	if st, err := proc.ReadStat(pid); err == nil {
		_ = os.WriteFile(filepath.Join(dir, strconv.Itoa(pid)), []byte(strconv.FormatUint(st.StartTicks, 10)), 0o600)
	}
}

// managedLeaks returns the recorded worker helpers still running.
func managedLeaks(dir string) []int {
	ents, _ := os.ReadDir(dir)
	var alive []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		ticks, err := strconv.ParseUint(string(b), 10, 64)
		if err == nil && proctest.Alive(pid, ticks) {
			alive = append(alive, pid)
		}
	}
	return alive
}

func killPid(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }
