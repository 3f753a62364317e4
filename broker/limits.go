package broker

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/commy/commy/internal/ipc"
	"github.com/commy/commy/internal/shm"
)

// Per-uid and per-connection defaults (see docs/security.md, "Resources").
const (
	DefaultMaxConnectionsPerUID   = 256
	DefaultReservedConnections    = 32
	DefaultMaxBufferedPerUID      = 64 << 20
	DefaultMaxSubscriptionsPerUID = 4096
	DefaultMaxFilterNamesPerUID   = 65536
	DefaultFrameTimeout           = 30 * time.Second
	DefaultMaxClientName          = 256
	// maxHelloFrame bounds the first frame: Hello holds two short fields.
	maxHelloFrame = 4096
	// replyFree is the size of a reply not charged to the uid's buffered
	// bytes: small replies cost little however many wait.
	replyFree = 64 << 10
)

// Limits a uid can hit; each names itself in the QUOTA_EXCEEDED message and
// in Stats.
const (
	limitConnections   = "connections"
	limitBuffered      = "buffered_bytes"
	limitSubscriptions = "subscriptions"
	limitFilterNames   = "filter_names"
)

// userLimits are the per-uid limits, from Config.
type userLimits struct {
	conns, buffered, subs, names int64
}

// users accounts what each uid holds: connections, bytes buffered in
// incomplete frames and unread replies, subscriptions and filter names. Like
// dbus-broker's per-user accounting, every charge is made to the uid that
// caused it before the resource is taken, refused past the uid's limit, and
// given back when the resource goes. Root and the broker's own uid are
// counted but never refused, so an operator can always connect and inspect.
// It is safe for concurrent use.
type users struct {
	mu           sync.Mutex
	m            map[uint32]*account
	refusedTotal map[string]uint64 // by limit, over every uid ever
	lim          userLimits
	self         uint32
}

// account is one uid's account. Its counters are guarded by users.mu.
type account struct {
	us         *users
	uid        uint32
	privileged bool
	conns      int64
	buffered   int64
	subs       int64
	names      int64
	refused    map[string]uint64 // refusals by limit
}

func newUsers(lim userLimits, self uint32) *users {
	return &users{m: map[uint32]*account{}, refusedTotal: map[string]uint64{}, lim: lim, self: self}
}

// privileged reports whether uid keeps reserved room: root and the broker's
// own uid.
func (us *users) privileged(uid uint32) bool { return uid == 0 || uid == us.self }

// connect charges a connection to uid.
func (us *users) connect(uid uint32) (*account, error) {
	us.mu.Lock()
	defer us.mu.Unlock()
	u := us.m[uid]
	if u == nil {
		u = &account{us: us, uid: uid, privileged: us.privileged(uid), refused: map[string]uint64{}}
		us.m[uid] = u
	}
	if err := u.chargeLocked(limitConnections, &u.conns, 1, us.lim.conns); err != nil {
		if u.conns == 0 {
			delete(us.m, uid)
		}
		return nil, err
	}
	return u, nil
}

// refuse counts a refusal of uid on limit that happened outside the account
// (the broker was full for unprivileged uids).
func (us *users) refuse(uid uint32, limit string) {
	us.mu.Lock()
	defer us.mu.Unlock()
	us.refusedTotal[limit]++
	if u := us.m[uid]; u != nil {
		u.refused[limit]++
	}
}

// disconnect gives back a connection; the account goes with the last one.
// Everything else the connection held must be discharged first.
func (u *account) disconnect() {
	us := u.us
	us.mu.Lock()
	defer us.mu.Unlock()
	u.conns--
	if u.conns == 0 && u.buffered == 0 && u.subs == 0 && u.names == 0 {
		delete(us.m, u.uid)
	}
}

// chargeLocked adds n to *have unless that passes limit (0: none) for an
// unprivileged uid.
func (u *account) chargeLocked(limit string, have *int64, n, max int64) error {
	if !u.privileged && max > 0 && *have+n > max {
		u.refused[limit]++
		u.us.refusedTotal[limit]++
		return fmt.Errorf("%w: %s of uid %d: %d held, %d more asked, limit %d", ipc.ErrQuotaExceeded, limit, u.uid, *have, n, max)
	}
	*have += n
	return nil
}

// Charge charges n buffered bytes; it makes an account an ipc.Budget.
func (u *account) Charge(n int) error {
	u.us.mu.Lock()
	defer u.us.mu.Unlock()
	return u.chargeLocked(limitBuffered, &u.buffered, int64(n), u.us.lim.buffered)
}

// Discharge gives back n buffered bytes. The account goes if this was the
// last of a uid without connections (a notice written after its session).
func (u *account) Discharge(n int) {
	us := u.us
	us.mu.Lock()
	defer us.mu.Unlock()
	u.buffered -= int64(n)
	if u.conns == 0 && u.buffered == 0 && u.subs == 0 && u.names == 0 && us.m[u.uid] == u {
		delete(us.m, u.uid)
	}
}

// subscribe charges one subscription with names filter names.
func (u *account) subscribe(names int) error {
	u.us.mu.Lock()
	defer u.us.mu.Unlock()
	if err := u.chargeLocked(limitSubscriptions, &u.subs, 1, u.us.lim.subs); err != nil {
		return err
	}
	if err := u.chargeLocked(limitFilterNames, &u.names, int64(names), u.us.lim.names); err != nil {
		u.subs--
		return err
	}
	return nil
}

// unsubscribe gives back what subscribe charged.
func (u *account) unsubscribe(names int) {
	u.us.mu.Lock()
	u.subs--
	u.names -= int64(names)
	u.us.mu.Unlock()
}

// UserUsage is what one uid holds against its limits (0: none).
type UserUsage struct {
	UID            uint32
	Privileged     bool
	Connections    int64
	BufferedBytes  int64
	Subscriptions  int64
	FilterNames    int64
	Refused        map[string]uint64
	MaxConnections int64
	MaxBuffered    int64
	MaxSubs        int64
	MaxFilterNames int64
}

// usage lists every uid with a connection, by uid.
func (us *users) usage() []UserUsage {
	us.mu.Lock()
	defer us.mu.Unlock()
	out := make([]UserUsage, 0, len(us.m))
	for _, uid := range slices.Sorted(maps.Keys(us.m)) {
		u := us.m[uid]
		uu := UserUsage{UID: uid, Privileged: u.privileged, Connections: u.conns, BufferedBytes: u.buffered,
			Subscriptions: u.subs, FilterNames: u.names, Refused: maps.Clone(u.refused)}
		if !u.privileged {
			uu.MaxConnections, uu.MaxBuffered, uu.MaxSubs, uu.MaxFilterNames = us.lim.conns, us.lim.buffered, us.lim.subs, us.lim.names
		}
		out = append(out, uu)
	}
	return out
}

// limitDefaults fills in the resource limits of cfg.
func limitDefaults(cfg *Config) {
	def := func(v *int, d int) {
		switch {
		case *v == 0:
			*v = d
		case *v < 0:
			*v = 0
		}
	}
	def(&cfg.MaxConnectionsPerUID, DefaultMaxConnectionsPerUID)
	def(&cfg.ReservedConnections, DefaultReservedConnections)
	def(&cfg.MaxSubscriptionsPerUID, DefaultMaxSubscriptionsPerUID)
	def(&cfg.MaxFilterNamesPerUID, DefaultMaxFilterNamesPerUID)
	def(&cfg.FDReserve, DefaultFDReserve)
	switch {
	case cfg.MaxBufferedPerUID == 0:
		cfg.MaxBufferedPerUID = DefaultMaxBufferedPerUID
	case cfg.MaxBufferedPerUID < 0:
		cfg.MaxBufferedPerUID = 0
	}
	switch {
	case cfg.FrameTimeout == 0:
		cfg.FrameTimeout = DefaultFrameTimeout
	case cfg.FrameTimeout < 0:
		cfg.FrameTimeout = 0
	}
	cfg.IdleTimeout = max(cfg.IdleTimeout, 0)
	switch {
	case cfg.AuditMaxSize == 0:
		cfg.AuditMaxSize = DefaultAuditMaxSize
	case cfg.AuditMaxSize < 0:
		cfg.AuditMaxSize = 0
	}
	def(&cfg.AuditKeep, DefaultAuditKeep)
	switch {
	case cfg.AuditCoalesce == 0:
		cfg.AuditCoalesce = DefaultAuditCoalesce
	case cfg.AuditCoalesce < 0:
		cfg.AuditCoalesce = 0
	}
	cfg.ReservedConnections = min(cfg.ReservedConnections, cfg.MaxConnections-1)
}

func userLimitsOf(cfg Config) userLimits {
	return userLimits{
		conns: int64(cfg.MaxConnectionsPerUID), buffered: cfg.MaxBufferedPerUID,
		subs: int64(cfg.MaxSubscriptionsPerUID), names: int64(cfg.MaxFilterNamesPerUID),
	}
}

// connectionLimit is how many connections the broker may hold when uid
// connects: all of them for root and the broker's uid, all but the reserve
// for everyone else. The caller holds smu.
func (b *Broker) connectionLimit(uid uint32) int {
	if b.users.privileged(uid) {
		return b.cfg.MaxConnections
	}
	return b.cfg.MaxConnections - b.cfg.ReservedConnections
}

// refuseConn tells a connection it was refused, if it can without waiting,
// and closes it. The log says so at most once a second.
func (b *Broker) refuseConn(uc *net.UnixConn, cred ipc.Cred, err error) {
	n := b.stats.rejected.Add(1)
	if now := time.Now().Unix(); b.refusedLogged.Swap(now) != now {
		b.log.Warn("connection refused", "uid", cred.UID, "pid", cred.PID, "err", err, "refused_total", n)
	}
	if frame, ferr := ipc.EncodeFrame(&ipc.Error{ErrorCode: ipc.CodeOf(err), Message: err.Error()}); ferr == nil {
		uc.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		uc.Write(frame)
	}
	uc.Close()
}

// endSubscription removes sess's subscription from svc and gives back its
// charge. The caller holds svc.mu.
func (b *Broker) endSubscription(svc *service, sess *session) {
	if sub := svc.subs[sess]; sub != nil {
		delete(svc.subs, sess)
		sess.user.unsubscribe(len(sub.filter))
	}
}

// maxFilterNames is the most variable names one Subscribe may name: as many
// as a service can hold.
func (b *Broker) maxFilterNames() int {
	if b.cfg.Service.DirCapacity > 0 {
		return b.cfg.Service.DirCapacity
	}
	return shm.DefaultDirCap
}

// Users reports what each connected uid holds against its limits, by uid.
func (b *Broker) Users() []UserUsage { return b.users.usage() }
