package shm

import (
	"encoding/binary"
	"sync/atomic"
	"unsafe"
)

// Magic opens every service file.
const Magic = "COMMYSHM"

// LayoutVersion is the version of the byte layout described in docs/shm-layout.md.
const LayoutVersion = 1

// Sizes of the fixed parts of a file.
const (
	HeaderSize    = 4096 // the header occupies the first page
	EntrySize     = 256  // one directory entry
	SlotHeader    = 64   // size and version in front of every value
	Align         = 64   // values and slots start on 64-byte boundaries
	MaxNameLen    = 128  // service and variable names
	MaxTenantLen  = 64   // tenant ids
	DefaultDirCap = 1024 // directory entries in a new file
)

// Header field offsets.
const (
	offMagic       = 0x00
	offVersion     = 0x08 // u32
	offHeaderSize  = 0x0C // u32
	offGeneration  = 0x10 // u64, bumped after every directory change
	offFileSize    = 0x18 // u64, bytes a reader may touch
	offMaxSize     = 0x20 // u64, the file never grows past this
	offChangeSeq   = 0x28 // u32, futex word, bumped after every applied change
	offFlags       = 0x2C // u32, flagDeleted, flagReplaced
	offDirOffset   = 0x30 // u32
	offDirCapacity = 0x34 // u32
	offEntrySize   = 0x38 // u32
	offEntryCount  = 0x3C // u32, entries [0, count) may be live
	offDataOffset  = 0x40 // u64
	offDataEnd     = 0x48 // u64, allocation high-water mark
	offChangeCount = 0x50 // u64, total applied changes
	offTenantLen   = 0x80 // u16
	offServiceLen  = 0x82 // u16
	offTenant      = 0x88 // [64]
	offService     = 0xC8 // [128]
)

// Directory entry field offsets, relative to the entry.
const (
	entSeq     = 0x00 // u64 seqlock: odd while the entry changes
	entState   = 0x08 // u64: bit 0 live, bit 1 active slot
	entSlot0   = 0x10 // u64 offset, u64 capacity
	entSlot1   = 0x20 // u64 offset, u64 capacity
	entNameLen = 0x30 // u16
	entName    = 0x40 // [128]
)

// Slot header field offsets, relative to the slot.
const (
	slotSize    = 0x00 // u64
	slotVersion = 0x08 // u64
)

const (
	stateLive   = 1 << 0
	stateActive = 1 << 1
)

// Header flags.
const (
	flagDeleted  = 1 << 0 // the service was deleted: readers stop
	flagReplaced = 1 << 1 // another file holds the service now: readers ask for it
	flagStop     = flagDeleted | flagReplaced
)

var le = binary.LittleEndian

// u64 returns the 8-byte word at off as an atomic. off must be 8-byte aligned;
// every mapping starts on a page boundary.
func u64(mem []byte, off uint64) *atomic.Uint64 {
	_ = mem[off+7]
	return (*atomic.Uint64)(unsafe.Pointer(&mem[off]))
}

// u32 returns the 4-byte word at off as an atomic.
func u32(mem []byte, off uint64) *atomic.Uint32 {
	_ = mem[off+3]
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

func entryOff(dirOff uint64, idx int) uint64 { return dirOff + uint64(idx)*EntrySize }

func slotOff(e uint64, slot uint64) uint64 { return e + entSlot0 + slot*16 }

// slotBytes is the room a slot of the given value capacity takes.
func slotBytes(capacity uint64) uint64 { return SlotHeader + alignUp(capacity) }

func alignUp(n uint64) uint64 { return (n + Align - 1) &^ (Align - 1) }
