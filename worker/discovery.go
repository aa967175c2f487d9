package worker

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/musterhq/muster/broker/proto"
)

// Replicas answer the NATS micro discovery protocol ($SRV.PING, $SRV.INFO,
// $SRV.STATS), so `nats micro ls` and `nats micro stats` list them. The
// micro name is CLASS_NAME_SERVICE; the exact service name is in the
// metadata key "muster.service".

func (r *replica) discoveryName() string {
	return strings.Join([]string{r.cfg.service.Class, r.cfg.service.Name, r.cfg.service.Service}, "_")
}

func discoverySubjects(name, id string) []string {
	var out []string
	for _, verb := range []string{"PING", "INFO", "STATS"} {
		out = append(out, "$SRV."+verb, "$SRV."+verb+"."+name, "$SRV."+verb+"."+name+"."+id)
	}
	return out
}

func (r *replica) identity() micro.ServiceIdentity {
	return micro.ServiceIdentity{
		Name: r.discoveryName(), ID: r.cfg.replicaID, Version: r.cfg.version,
		Metadata: map[string]string{"muster.service": r.cfg.service.String(), "muster.capacity": itoa(r.cfg.capacity)},
	}
}

func (r *replica) onDiscovery(nm *nats.Msg) {
	var v any
	switch {
	case strings.HasPrefix(nm.Subject, "$SRV.PING"):
		v = micro.Ping{ServiceIdentity: r.identity(), Type: micro.PingResponseType}
	case strings.HasPrefix(nm.Subject, "$SRV.INFO"):
		v = micro.Info{
			ServiceIdentity: r.identity(), Type: micro.InfoResponseType,
			Description: "Muster replica of " + r.cfg.service.String(),
			Endpoints: []micro.EndpointInfo{{
				Name: "call", Subject: proto.WarmSubject(r.cfg.service), QueueGroup: proto.WarmQueue,
				Metadata: map[string]string{"private": proto.ReplicaSubject(r.cfg.replicaID)},
			}},
		}
	default:
		info := r.info()
		n := info.Stats.Messages
		avg := time.Duration(0)
		if c := info.Stats.Conversations; c > 0 {
			avg = time.Duration(info.Stats.ProcessingNS / c)
		}
		last, _ := r.stats.lastError.Load().(string)
		data, _ := json.Marshal(info)
		v = micro.Stats{
			ServiceIdentity: r.identity(), Type: micro.StatsResponseType, Started: r.started.UTC(),
			Endpoints: []*micro.EndpointStats{{
				Name: "call", Subject: proto.WarmSubject(r.cfg.service), QueueGroup: proto.WarmQueue,
				NumRequests: int(n), NumErrors: int(info.Stats.Errors), LastError: last,
				ProcessingTime: time.Duration(info.Stats.ProcessingNS), AverageProcessingTime: avg,
				Data: data,
			}},
		}
	}
	b, _ := json.Marshal(v)
	_ = nm.Respond(b)
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
