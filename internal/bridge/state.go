package bridge

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// stateFile is the name of the bridge's state in its state directory.
const stateFile = "bridge-state.json"

// durable is what the bridge knows to be in the stream for one variable: the
// digest of the value and the stream sequence that carried it.
type durable struct {
	Digest digest
	Seq    uint64
}

// state is what survives a restart: where the stream was applied up to, and
// what was last replicated of each variable. A local value that differs
// from it after a restart was written while the bridge was away.
type state struct {
	LastSeq uint64
	Vars    map[svcKey]map[string]durable
}

type stateJSON struct {
	HostID   string                            `json:"host_id"`
	Stream   string                            `json:"stream"`
	LastSeq  uint64                            `json:"last_seq"`
	Services map[string]map[string]durableJSON `json:"services"`
}

type durableJSON struct {
	Digest string `json:"d"`
	Seq    uint64 `json:"s"`
}

func newState() *state { return &state{Vars: map[svcKey]map[string]durable{}} }

// loadState reads the state file; a missing file is an empty state. A file
// written for another host or stream is an error: its positions mean nothing
// here.
func loadState(dir, host, stream string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, fmt.Errorf("bridge: state: %w", err)
	}
	var sj stateJSON
	if err := json.Unmarshal(data, &sj); err != nil {
		return nil, fmt.Errorf("bridge: state %s: %w", filepath.Join(dir, stateFile), err)
	}
	if sj.HostID != host || sj.Stream != stream {
		return nil, fmt.Errorf("%w: state %s belongs to host %q and stream %q, not %q and %q (remove it, or run with --resync)",
			ErrConfig, filepath.Join(dir, stateFile), sj.HostID, sj.Stream, host, stream)
	}
	st := newState()
	st.LastSeq = sj.LastSeq
	for k, vars := range sj.Services {
		t, s, ok := cutKey(k)
		if !ok {
			return nil, fmt.Errorf("bridge: state: bad service %q", k)
		}
		m := map[string]durable{}
		for name, d := range vars {
			var dg digest
			if b, err := hex.DecodeString(d.Digest); err != nil || len(b) != len(dg) {
				return nil, fmt.Errorf("bridge: state: bad digest for %s/%s", k, name)
			} else {
				copy(dg[:], b)
			}
			m[name] = durable{Digest: dg, Seq: d.Seq}
		}
		st.Vars[svcKey{t, s}] = m
	}
	return st, nil
}

func cutKey(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '/' {
			return k[:i], k[i+1:], i > 0 && i < len(k)-1
		}
	}
	return "", "", false
}

// save writes the state to its file (see writeState).
func (st *state) save(dir, host, stream string) error {
	data, err := st.marshal(host, stream)
	if err != nil {
		return err
	}
	return writeState(dir, data)
}

// marshal encodes the state for its file.
func (st *state) marshal(host, stream string) ([]byte, error) {
	sj := stateJSON{HostID: host, Stream: stream, LastSeq: st.LastSeq, Services: map[string]map[string]durableJSON{}}
	for k, vars := range st.Vars {
		m := make(map[string]durableJSON, len(vars))
		for name, d := range vars {
			m[name] = durableJSON{Digest: hex.EncodeToString(d.Digest[:]), Seq: d.Seq}
		}
		sj.Services[k.String()] = m
	}
	data, err := json.Marshal(sj)
	if err != nil {
		return nil, fmt.Errorf("bridge: state: %w", err)
	}
	return data, nil
}

// writeState writes an encoded state to a temporary file, syncs it and
// renames it over the old one, so a crash leaves the old state or the new
// one.
func writeState(dir string, data []byte) error {
	tmp, err := os.CreateTemp(dir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("bridge: state: %w", err)
	}
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, stateFile))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("bridge: state: %w", err)
	}
	return nil
}
