package bridge

import (
	"crypto/sha256"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Kinds of batch.
const (
	kindValues  = 0 // values set and variables deleted
	kindDeleted = 1 // the whole service was deleted
)

// Headers every message carries besides Nats-Msg-Id.
const (
	hdrOrigin = "Commy-Origin" // the publishing host's id
)

// batch is one stream message: the changes one host saw in one service,
// applied as one ReportVariableChanges elsewhere.
type batch struct {
	Origin  string   `cbor:"1,keyasint"`
	Tenant  string   `cbor:"2,keyasint"`
	Service string   `cbor:"3,keyasint"`
	Kind    uint8    `cbor:"4,keyasint,omitempty"`
	Time    int64    `cbor:"5,keyasint"` // Unix ns when the origin read the change
	Set     []value  `cbor:"6,keyasint,omitempty"`
	Del     []string `cbor:"7,keyasint,omitempty"`
}

// value is one variable's new value, with its version on the origin host.
type value struct {
	_       struct{} `cbor:",toarray"`
	Name    string
	Data    []byte
	Version uint64
}

var decMode, _ = cbor.DecOptions{MaxArrayElements: 1 << 20, MaxMapPairs: 64, MaxNestedLevels: 8}.DecMode()

func (b *batch) encode() ([]byte, error) {
	return cbor.Marshal(b)
}

func decodeBatch(data []byte) (*batch, error) {
	var b batch
	if err := decMode.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("bridge: bad message: %w", err)
	}
	if b.Origin == "" || b.Tenant == "" || b.Service == "" {
		return nil, fmt.Errorf("bridge: bad message: origin, tenant or service missing")
	}
	return &b, nil
}

// size is about what the batch takes on the wire.
func (b *batch) size() int {
	n := 64 + len(b.Origin) + len(b.Tenant) + len(b.Service)
	for _, v := range b.Set {
		n += 16 + len(v.Name) + len(v.Data)
	}
	for _, d := range b.Del {
		n += 4 + len(d)
	}
	return n
}

// subject is where a service's batches go: <prefix>.<tenant>.<service>,
// with the '.' of names written as '~' (which names never hold).
func subject(prefix, tenant, service string) string {
	return prefix + "." + strings.ReplaceAll(tenant, ".", "~") + "." + strings.ReplaceAll(service, ".", "~")
}

// digest identifies a value without keeping it.
type digest [sha256.Size]byte

func digestOf(data []byte) digest { return sha256.Sum256(data) }

// svcKey names a service.
type svcKey struct{ tenant, service string }

func (k svcKey) String() string { return k.tenant + "/" + k.service }
