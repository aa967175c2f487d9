package attach

import (
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/musterhq/muster/attach/internal/logrot"
	"github.com/musterhq/muster/broker/proto"
)

// Logs over NATS: the manager's own log (a copy of what it logs, in
// <log_dir>/attach.log, rotated like the replicas' logs) and its replicas'
// logs (<log_dir>/C_N_S/<id>.log, running or exited, until the log cap
// removes them) are served on proto.AttachLogsSubject, so `muster host
// logs` and `muster replica logs` work from any host that reaches NATS.

// ownLogName is the manager's own log file in its log dir.
const ownLogName = "attach.log"

func (m *Manager) ownLogPath() string { return filepath.Join(m.cfg.Host.LogDir, ownLogName) }

// openOwnLog tees the manager's logger into its own log file.
func (m *Manager) openOwnLog() error {
	f, err := logrot.Open(m.ownLogPath(), m.cfg.Host.LogMaxBytes, m.cfg.Host.LogKeep)
	if err != nil {
		return err
	}
	m.ownLog = f
	file := slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelInfo})
	m.log = slog.New(slog.NewMultiHandler(m.opts.Logger.Handler(), file)).With("attach", m.id)
	return nil
}

// closeOwnLog closes the own log file (at the very end of a shutdown).
func (m *Manager) closeOwnLog() {
	if m.ownLog != nil {
		_ = m.ownLog.Close()
	}
}

// replicaLogPath finds the log of replica id: its service's dir while it
// runs, else any service dir holding <id>.log. "" when there is none.
func (m *Manager) replicaLogPath(id string) string {
	m.mu.Lock()
	r := m.reps[id]
	m.mu.Unlock()
	if r != nil {
		return m.logPath(r.svc.cfg.Service, id)
	}
	for _, sc := range m.cfg.Services {
		p := m.logPath(sc.Service, id)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// onLogs answers a proto.LogRequest with a chunk of the log it names.
func (m *Manager) onLogs(msg *nats.Msg) {
	if msg.Reply == "" {
		return
	}
	var req proto.LogRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		m.respondError(msg, proto.Errorf(proto.CodeBadRequest, "log request: %v", err))
		return
	}
	path := m.ownLogPath()
	if req.Replica != "" {
		// The id is a subject token ([A-Za-z0-9_-]): it cannot name a path
		// outside the log dir.
		if err := proto.ValidID(req.Replica); err != nil {
			m.respondError(msg, proto.Errorf(proto.CodeBadRequest, "log request: replica: %v", err))
			return
		}
		if path = m.replicaLogPath(req.Replica); path == "" {
			m.respondError(msg, proto.Errorf(proto.CodeParticipantUnknown, "no log of replica %s on host %s", req.Replica, m.id))
			return
		}
	}
	limit := int(m.nc.MaxPayload()) - 1024
	if req.Max > 0 && req.Max < limit {
		limit = req.Max
	}
	data, off, size, err := readChunk(path, req.Offset, limit)
	if errors.Is(err, fs.ErrNotExist) {
		data, off, size, err = nil, 0, 0, nil // not written yet: an empty log
	}
	if err != nil {
		m.respondError(msg, proto.Errorf(proto.CodeUnavailable, "read %s: %v", path, err))
		return
	}
	r := nats.NewMsg(msg.Reply)
	r.Data = data
	r.Header.Set(proto.HdrLogOffset, strconv.FormatInt(off, 10))
	r.Header.Set(proto.HdrLogSize, strconv.FormatInt(size, 10))
	r.Header.Set(proto.HdrLogFile, path)
	_ = m.nc.PublishMsg(r)
}

// readChunk reads at most limit bytes of path from offset (negative: that
// many bytes before the end; past the end or beyond a file that shrank:
// from the start, as after a rotation). It returns the bytes, where they
// start and the file's size.
func readChunk(path string, offset int64, limit int) ([]byte, int64, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, 0, err
	}
	size := st.Size()
	switch {
	case offset < 0:
		offset = max(0, size+offset)
	case offset > size:
		offset = 0 // rotated since: start over
	}
	buf := make([]byte, min(int64(limit), size-offset))
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, 0, err
	}
	return buf[:n], offset, size, nil
}
