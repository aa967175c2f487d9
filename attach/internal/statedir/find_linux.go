package statedir

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/musterhq/muster/broker/proto"
)

// findReplica returns the PID of a live process leading its own process
// group whose environment holds MUSTER_REPLICA_ID=id (what an attach
// manager starts a replica with), or 0. It reads /proc; processes of other
// users are not readable and not ours.
func findReplica(id string) int {
	mark := []byte(proto.EnvReplicaID + "=" + id + "\x00")
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil || !bytes.Contains(env, mark) {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			return pid
		}
	}
	return 0
}
