package broker

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/pelletier/go-toml/v2"
)

// Right is one permission, or a set of them.
type Right uint8

// Rights a policy grants.
const (
	RightRead   Right = 1 << iota // ReadVariable, ListServices, ListVariables, Subscribe
	RightMap                      // GetServiceFilePath (with read)
	RightWrite                    // WriteVariable, ReportVariableChanges
	RightCreate                   // CreateService, DeleteService, AllocateVariable, DeallocateVariable
	RightAdmin                    // everything; tenants with a tenant-level grant; Stats with a broker-wide one
)

// allRights is what root and the broker's user hold.
const allRights = RightRead | RightMap | RightWrite | RightCreate | RightAdmin

var rightNames = []struct {
	r    Right
	name string
}{{RightRead, "read"}, {RightMap, "map"}, {RightWrite, "write"}, {RightCreate, "create"}, {RightAdmin, "admin"}}

func (r Right) String() string {
	var s []string
	for _, n := range rightNames {
		if r&n.r != 0 {
			s = append(s, n.name)
		}
	}
	return strings.Join(s, "+")
}

// ErrPolicy: the policy file cannot be used.
var ErrPolicy = errors.New("broker: bad policy")

// Policy decides what a user may do. Without a file, root and the broker's
// own user may do everything and nobody else anything; with one, root and the
// broker's user keep every right and the grants add to everyone else's. It is
// safe for concurrent use.
type Policy struct {
	grants []grant
	self   uint32
	quotas *Quotas // nil: DefaultQuotas

	mu     sync.Mutex
	groups map[uint32][]uint32 // supplementary groups by uid, cached
}

type grant struct {
	uids, gids map[uint32]bool
	tenants    []string // globs
	services   []string // globs
	rights     Right
}

// policyFile is the TOML schema (see docs/security.md).
type policyFile struct {
	Grant []struct {
		Users    []any    `toml:"users"`
		Groups   []any    `toml:"groups"`
		Tenants  []string `toml:"tenants"`
		Services []string `toml:"services"`
		Rights   []string `toml:"rights"`
	} `toml:"grant"`
	Limits limitsFile `toml:"limits"`
}

// DefaultPolicy is the policy without a file.
func DefaultPolicy() *Policy { return &Policy{self: uint32(os.Getuid())} }

// LoadPolicy reads and checks a TOML policy file. Unknown keys, unknown
// rights, users or groups, and bad globs are errors.
func LoadPolicy(file string) (*Policy, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return ParsePolicy(data)
}

// ParsePolicy checks a TOML policy.
func ParsePolicy(data []byte) (*Policy, error) {
	var pf policyFile
	dec := toml.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&pf); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	p := DefaultPolicy()
	q, err := pf.Limits.quotas()
	if err != nil {
		return nil, err
	}
	p.quotas = &q
	for i, g := range pf.Grant {
		ng := grant{uids: map[uint32]bool{}, gids: map[uint32]bool{}, tenants: g.Tenants, services: g.Services}
		where := fmt.Sprintf("grant %d", i+1)
		for _, u := range g.Users {
			id, err := resolveID(u, lookupUser)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: user %v: %w", ErrPolicy, where, u, err)
			}
			ng.uids[id] = true
		}
		for _, gr := range g.Groups {
			id, err := resolveID(gr, lookupGroup)
			if err != nil {
				return nil, fmt.Errorf("%w: %s: group %v: %w", ErrPolicy, where, gr, err)
			}
			ng.gids[id] = true
		}
		if len(ng.uids) == 0 && len(ng.gids) == 0 {
			return nil, fmt.Errorf("%w: %s: names no users or groups", ErrPolicy, where)
		}
		if len(ng.tenants) == 0 {
			return nil, fmt.Errorf("%w: %s: names no tenants (use \"*\" for all)", ErrPolicy, where)
		}
		if len(ng.services) == 0 {
			ng.services = []string{"*"}
		}
		for _, glob := range append(append([]string{}, ng.tenants...), ng.services...) {
			if _, err := path.Match(glob, ""); err != nil {
				return nil, fmt.Errorf("%w: %s: glob %q: %w", ErrPolicy, where, glob, err)
			}
		}
		for _, r := range g.Rights {
			found := false
			for _, n := range rightNames {
				if n.name == r {
					ng.rights |= n.r
					found = true
				}
			}
			if !found {
				return nil, fmt.Errorf("%w: %s: unknown right %q (read, map, write, create, admin)", ErrPolicy, where, r)
			}
		}
		p.grants = append(p.grants, ng)
	}
	return p, nil
}

func lookupUser(name string) (string, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return "", err
	}
	return u.Uid, nil
}

func lookupGroup(name string) (string, error) {
	g, err := user.LookupGroup(name)
	if err != nil {
		return "", err
	}
	return g.Gid, nil
}

// resolveID turns a name or number (TOML integer or numeric string) into an id.
func resolveID(v any, lookup func(string) (string, error)) (uint32, error) {
	switch x := v.(type) {
	case int64:
		if x < 0 || x > 1<<32-1 {
			return 0, fmt.Errorf("out of range")
		}
		return uint32(x), nil
	case string:
		if n, err := strconv.ParseUint(x, 10, 32); err == nil {
			return uint32(n), nil
		}
		s, err := lookup(x)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(s, 10, 32)
		return uint32(n), err
	default:
		return 0, fmt.Errorf("want a name or a number, got %T", v)
	}
}

// superuser reports whether uid always has every right.
func (p *Policy) superuser(uid uint32) bool { return uid == 0 || uid == p.self }

// Rights returns what the caller may do on a service of a tenant. An empty
// service asks about the tenant itself: only tenant-level grants (services
// "*") count there, so that a grant on some services never reaches the
// whole tenant.
func (p *Policy) Rights(c Caller, tenant, service string) Right {
	if p.superuser(c.UID) {
		return allRights
	}
	var r Right
	for _, g := range p.grants {
		if !p.applies(g, c) || !matchAny(g.tenants, tenant) {
			continue
		}
		if service == "" && !contains(g.services, "*") || service != "" && !matchAny(g.services, service) {
			continue
		}
		r |= g.rights
	}
	if r&RightAdmin != 0 {
		r |= allRights
	}
	return r
}

// TenantWide reports whether the caller holds want on the whole tenant:
// through a tenant-level grant, or on every one of its services, which the
// caller names.
func (p *Policy) TenantWide(c Caller, tenant string, want Right, services []string) bool {
	if p.Rights(c, tenant, "")&want == want {
		return true
	}
	if len(services) == 0 {
		return false
	}
	for _, svc := range services {
		if p.Rights(c, tenant, svc)&want != want {
			return false
		}
	}
	return true
}

// GlobalAdmin reports whether the caller holds a broker-wide grant: admin on
// every tenant ("*") and every service ("*").
func (p *Policy) GlobalAdmin(c Caller) bool {
	if p.superuser(c.UID) {
		return true
	}
	for _, g := range p.grants {
		if g.rights&RightAdmin != 0 && p.applies(g, c) && contains(g.tenants, "*") && contains(g.services, "*") {
			return true
		}
	}
	return false
}

// Any reports whether the caller has some right on some service of tenant.
func (p *Policy) Any(c Caller, tenant string) bool {
	if p.superuser(c.UID) {
		return true
	}
	for _, g := range p.grants {
		if g.rights != 0 && p.applies(g, c) && matchAny(g.tenants, tenant) {
			return true
		}
	}
	return false
}

func (p *Policy) applies(g grant, c Caller) bool {
	if g.uids[c.UID] || g.gids[c.GID] {
		return true
	}
	if len(g.gids) == 0 {
		return false
	}
	groups := c.Groups
	if !c.groupsKnown {
		groups = p.supplementary(c.UID)
	}
	for _, gid := range groups {
		if g.gids[gid] {
			return true
		}
	}
	return false
}

// supplementary returns the groups the user database lists for uid: the
// fallback for kernels without SO_PEERGROUPS.
func (p *Policy) supplementary(uid uint32) []uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if g, ok := p.groups[uid]; ok {
		return g
	}
	var out []uint32
	if u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10)); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			for _, s := range ids {
				if n, err := strconv.ParseUint(s, 10, 32); err == nil {
					out = append(out, uint32(n))
				}
			}
		}
	}
	if p.groups == nil {
		p.groups = map[uint32][]uint32{}
	}
	p.groups[uid] = out
	return out
}

func matchAny(globs []string, s string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, s); ok {
			return true
		}
	}
	return false
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
