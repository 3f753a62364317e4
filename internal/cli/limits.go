package cli

import (
	"fmt"
	"strings"

	"github.com/commy/commy/broker"
	"github.com/commy/commy/client"
	ucli "github.com/urfave/cli/v2"
)

// limitFlags are serve's resource limits (see docs/security.md, "Resources").
func limitFlags() []ucli.Flag {
	return []ucli.Flag{
		&ucli.DurationFlag{Name: "idle-timeout", Usage: "drop a connection that holds no subscription and sends nothing for this long (0: never)"},
		&ucli.DurationFlag{Name: "frame-timeout", Value: broker.DefaultFrameTimeout, Usage: "a frame that has started must arrive whole within this"},
		&ucli.IntFlag{Name: "max-connections-per-uid", Value: broker.DefaultMaxConnectionsPerUID, Usage: "connections one uid may hold (root and the broker's uid: no limit; -1: none)"},
		&ucli.IntFlag{Name: "reserved-connections", Value: broker.DefaultReservedConnections, Usage: "of --max-connections, how many only root and the broker's uid may use"},
		&ucli.Int64Flag{Name: "max-buffered-per-uid", Value: broker.DefaultMaxBufferedPerUID, Usage: "`BYTES` one uid may have buffered in incomplete requests, unread replies and waiting notices (-1: none)"},
		&ucli.IntFlag{Name: "max-subscriptions-per-uid", Value: broker.DefaultMaxSubscriptionsPerUID, Usage: "subscriptions one uid may hold (-1: none)"},
		&ucli.IntFlag{Name: "fd-reserve", Value: broker.DefaultFDReserve, Usage: "descriptors new services may not take: kept for connections (half), root's connections and files passed by GetServiceFilePath"},
		&ucli.Int64Flag{Name: "audit-max-size", Value: broker.DefaultAuditMaxSize, Usage: "rotate the audit log when it would pass this many `BYTES` (-1: never)"},
		&ucli.IntFlag{Name: "audit-keep", Value: broker.DefaultAuditKeep, Usage: "rotated audit logs kept (audit.log.1 ...; -1: none)"},
		&ucli.DurationFlag{Name: "audit-coalesce", Value: broker.DefaultAuditCoalesce, Usage: "per uid and interval, record the first denials and connections in full and the rest as one summary (-1s: all in full)"},
		&ucli.BoolFlag{Name: "audit-strict", Usage: "refuse audited requests (writes, creations, GetServiceFilePath) while the audit log cannot be written"},
		&ucli.IntFlag{Name: "max-filter-names-per-uid", Value: broker.DefaultMaxFilterNamesPerUID, Usage: "variable names one uid may hold in subscription filters (-1: none)"},
	}
}

// limitConfig copies the limit flags into cfg.
func limitConfig(c *ucli.Context, cfg *broker.Config) {
	cfg.IdleTimeout = c.Duration("idle-timeout")
	cfg.FrameTimeout = c.Duration("frame-timeout")
	cfg.MaxConnectionsPerUID = c.Int("max-connections-per-uid")
	cfg.ReservedConnections = c.Int("reserved-connections")
	cfg.MaxBufferedPerUID = c.Int64("max-buffered-per-uid")
	cfg.MaxSubscriptionsPerUID = c.Int("max-subscriptions-per-uid")
	cfg.MaxFilterNamesPerUID = c.Int("max-filter-names-per-uid")
	cfg.FDReserve = c.Int("fd-reserve")
	cfg.AuditMaxSize = c.Int64("audit-max-size")
	cfg.AuditKeep = c.Int("audit-keep")
	cfg.AuditCoalesce = c.Duration("audit-coalesce")
	cfg.AuditStrict = c.Bool("audit-strict")
}

// limitFigure names a limit in the stats table: limits.<scope>[.<id>].<limit>.
func limitFigure(l client.LimitUsage) string {
	parts := []string{"limits", l.Scope}
	if l.ID != "" {
		parts = append(parts, l.ID)
	}
	return strings.Join(append(parts, l.Limit), ".")
}

// limitValue is "used/max", "used/-" without a limit, and the refusals.
func limitValue(c *ucli.Context, l client.LimitUsage) string {
	num := func(v int64) string {
		if strings.HasSuffix(l.Limit, "bytes") && v >= 0 {
			return size(c, uint64(v))
		}
		return fmt.Sprint(v)
	}
	out := num(l.Used) + "/-"
	if l.Max >= 0 {
		out = num(l.Used) + "/" + num(l.Max)
	}
	if l.Refused > 0 {
		out += fmt.Sprintf(" (refused %d)", l.Refused)
	}
	return out
}
