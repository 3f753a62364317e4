package bridge

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// ErrConfig: the bridge configuration cannot be used.
var ErrConfig = errors.New("bridge: bad config")

// Config is what a Bridge needs; LoadConfig reads it from TOML.
type Config struct {
	// HostID names this host in every message it publishes; it must differ
	// between hosts. Default: the host name.
	HostID string `toml:"host_id"`
	// Socket is the local broker's socket (the command line's --socket
	// when not set).
	Socket string `toml:"socket"`
	// StateDir keeps the last applied stream sequence and what was last
	// replicated of each variable, so a restart resumes where it stopped.
	StateDir string `toml:"state_dir"`
	// MaxPending bounds the batches waiting for JetStream (default 10000)
	// and MaxPendingBytes their size (default 64 MiB). Past either bound the
	// waiting batches are merged into one per service (latest value of each
	// variable); past it again the bridge stops reading local changes, which
	// the broker keeps, until JetStream takes some.
	MaxPending      int   `toml:"max_pending"`
	MaxPendingBytes int64 `toml:"max_pending_bytes"`
	// ScanInterval is how often the bridge looks for new local services
	// (default 1s).
	ScanInterval Duration `toml:"scan_interval"`

	NATS      NATSConfig      `toml:"nats"`
	JetStream JetStreamConfig `toml:"jetstream"`
	// Federate lists the services to mirror; a service is federated when
	// any entry matches it.
	Federate []Pattern `toml:"federate"`
}

// NATSConfig says how to reach the NATS cluster, as nats users expect.
type NATSConfig struct {
	URLs     []string `toml:"urls"`      // default ["nats://127.0.0.1:4222"]
	Name     string   `toml:"name"`      // connection name; default "commy-bridge <host_id>"
	Creds    string   `toml:"creds"`     // user JWT + NKey seed file (.creds)
	NKeySeed string   `toml:"nkey_seed"` // NKey seed file
	User     string   `toml:"user"`
	Password string   `toml:"password"`
	Token    string   `toml:"token"`
	TLSCA    string   `toml:"tls_ca"`   // CA bundle to verify the servers
	TLSCert  string   `toml:"tls_cert"` // client certificate ...
	TLSKey   string   `toml:"tls_key"`  // ... and its key
	// ReconnectWait paces reconnection attempts (default 1s).
	ReconnectWait Duration `toml:"reconnect_wait"`
}

// JetStreamConfig is the stream layout.
type JetStreamConfig struct {
	// Stream is the stream's name (default "COMMY").
	Stream string `toml:"stream"`
	// SubjectPrefix starts every subject: <prefix>.<tenant>.<service>
	// (default "commy").
	SubjectPrefix string `toml:"subject_prefix"`
	// Replicas is the stream's replication factor (default 1; 3 on a
	// three-node cluster).
	Replicas int `toml:"replicas"`
	// MaxAge and MaxBytes bound the stream's history (default: unbounded).
	// A host whose position fell out of the history replays what is left.
	MaxAge   Duration `toml:"max_age"`
	MaxBytes int64    `toml:"max_bytes"`
	// Domain is the JetStream domain, if the account uses one.
	Domain string `toml:"domain"`
}

// Pattern matches tenants and services with path.Match globs.
type Pattern struct {
	Tenant  string `toml:"tenant"`
	Service string `toml:"service"` // default "*"
}

// Duration is a time.Duration written as "1s", "250ms" in TOML.
type Duration time.Duration

// UnmarshalText parses a Go duration.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalText writes a Go duration.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// LoadConfig reads a TOML config file and fills in the defaults. Unknown
// keys are errors.
func LoadConfig(file string) (Config, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return ParseConfig(data)
}

// ParseConfig is LoadConfig on the file's contents.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := toml.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	if err := c.Check(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Check fills in defaults and reports the first thing that cannot work.
func (c *Config) Check() error {
	if c.HostID == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("%w: host_id not set and no host name: %w", ErrConfig, err)
		}
		c.HostID = h
	}
	if strings.ContainsAny(c.HostID, " \t\r\n") {
		return fmt.Errorf("%w: host_id %q: no white space", ErrConfig, c.HostID)
	}
	if c.StateDir == "" {
		return fmt.Errorf("%w: state_dir not set", ErrConfig)
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 10000
	}
	if c.MaxPendingBytes <= 0 {
		c.MaxPendingBytes = 64 << 20
	}
	if c.ScanInterval <= 0 {
		c.ScanInterval = Duration(time.Second)
	}
	if len(c.NATS.URLs) == 0 {
		c.NATS.URLs = []string{"nats://127.0.0.1:4222"}
	}
	if c.NATS.Name == "" {
		c.NATS.Name = "commy-bridge " + c.HostID
	}
	if c.NATS.ReconnectWait <= 0 {
		c.NATS.ReconnectWait = Duration(time.Second)
	}
	if (c.NATS.TLSCert == "") != (c.NATS.TLSKey == "") {
		return fmt.Errorf("%w: nats.tls_cert and nats.tls_key go together", ErrConfig)
	}
	if c.NATS.Creds != "" && c.NATS.NKeySeed != "" {
		return fmt.Errorf("%w: nats.creds and nats.nkey_seed exclude each other", ErrConfig)
	}
	js := &c.JetStream
	if js.Stream == "" {
		js.Stream = "COMMY"
	}
	if strings.ContainsAny(js.Stream, ".*> \t") {
		return fmt.Errorf("%w: jetstream.stream %q: no '.', '*', '>' or white space", ErrConfig, js.Stream)
	}
	if js.SubjectPrefix == "" {
		js.SubjectPrefix = "commy"
	}
	if strings.ContainsAny(js.SubjectPrefix, "*> \t") || strings.HasPrefix(js.SubjectPrefix, ".") || strings.HasSuffix(js.SubjectPrefix, ".") {
		return fmt.Errorf("%w: jetstream.subject_prefix %q: want tokens without wildcards", ErrConfig, js.SubjectPrefix)
	}
	if js.Replicas <= 0 {
		js.Replicas = 1
	}
	if js.Replicas > 5 {
		return fmt.Errorf("%w: jetstream.replicas %d: JetStream allows 1 to 5", ErrConfig, js.Replicas)
	}
	if len(c.Federate) == 0 {
		return fmt.Errorf("%w: no [[federate]] entry: nothing to mirror", ErrConfig)
	}
	for i := range c.Federate {
		p := &c.Federate[i]
		if p.Tenant == "" {
			return fmt.Errorf("%w: federate %d: tenant not set", ErrConfig, i+1)
		}
		if p.Service == "" {
			p.Service = "*"
		}
		for _, g := range []string{p.Tenant, p.Service} {
			if _, err := path.Match(g, ""); err != nil {
				return fmt.Errorf("%w: federate %d: glob %q: %w", ErrConfig, i+1, g, err)
			}
		}
	}
	return nil
}

// federated reports whether the config mirrors tenant's service.
func (c *Config) federated(tenant, service string) bool {
	for _, p := range c.Federate {
		if ok, _ := path.Match(p.Tenant, tenant); !ok {
			continue
		}
		if ok, _ := path.Match(p.Service, service); ok {
			return true
		}
	}
	return false
}

// tenantMayMatch reports whether some pattern can match a service of tenant.
func (c *Config) tenantMayMatch(tenant string) bool {
	for _, p := range c.Federate {
		if ok, _ := path.Match(p.Tenant, tenant); ok {
			return true
		}
	}
	return false
}
