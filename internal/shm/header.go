package shm

import "fmt"

// header is the fixed part of the header, checked.
type header struct {
	maxSize, fileSize  uint64
	dirOff, dataOff    uint64
	dirCap, entryCount int
	dataEnd            uint64
}

// parseHeader checks the header page of a file that is size bytes long.
func parseHeader(b []byte, size uint64) (header, error) {
	var h header
	if len(b) < HeaderSize || string(b[offMagic:offMagic+8]) != Magic {
		return h, fmt.Errorf("%w: bad magic", ErrCorrupt)
	}
	if v := le.Uint32(b[offVersion:]); v != LayoutVersion {
		return h, fmt.Errorf("%w: layout version %d, want %d", ErrCorrupt, v, LayoutVersion)
	}
	if hs := le.Uint32(b[offHeaderSize:]); hs != HeaderSize {
		return h, fmt.Errorf("%w: header size %d", ErrCorrupt, hs)
	}
	if es := le.Uint32(b[offEntrySize:]); es != EntrySize {
		return h, fmt.Errorf("%w: entry size %d", ErrCorrupt, es)
	}
	h.maxSize = le.Uint64(b[offMaxSize:])
	h.fileSize = le.Uint64(b[offFileSize:])
	h.dirOff = uint64(le.Uint32(b[offDirOffset:]))
	h.dirCap = int(le.Uint32(b[offDirCapacity:]))
	h.entryCount = int(le.Uint32(b[offEntryCount:]))
	h.dataOff = le.Uint64(b[offDataOffset:])
	h.dataEnd = le.Uint64(b[offDataEnd:])
	switch {
	case h.dirOff < HeaderSize || h.dirOff%8 != 0:
		return h, fmt.Errorf("%w: directory at %d", ErrCorrupt, h.dirOff)
	case h.dirCap <= 0 || h.dirCap > 1<<20 || h.entryCount > h.dirCap:
		return h, fmt.Errorf("%w: directory of %d entries, %d used", ErrCorrupt, h.dirCap, h.entryCount)
	case h.dataOff < h.dirOff+uint64(h.dirCap)*EntrySize || h.dataOff%Align != 0:
		return h, fmt.Errorf("%w: data at %d", ErrCorrupt, h.dataOff)
	case h.fileSize > size || h.fileSize < h.dataOff:
		return h, fmt.Errorf("%w: header says %d bytes, file has %d", ErrCorrupt, h.fileSize, size)
	case h.maxSize < h.fileSize || h.maxSize > 1<<46:
		return h, fmt.Errorf("%w: maximum size %d", ErrCorrupt, h.maxSize)
	case h.dataEnd < h.dataOff || h.dataEnd > h.fileSize:
		return h, fmt.Errorf("%w: data end %d", ErrCorrupt, h.dataEnd)
	}
	return h, nil
}
