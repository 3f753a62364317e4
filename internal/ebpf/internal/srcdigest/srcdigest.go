// Package srcdigest hashes the files a generated artefact was built from, so
// that a test can tell when a committed artefact no longer matches them.
package srcdigest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
)

// Sum returns "sha256:" and the hex SHA-256 of the named files in dir, in the
// given order. Each file contributes its name, its length and its bytes, so
// renaming, reordering or moving bytes between files changes the sum.
func Sum(dir string, names ...string) (string, error) {
	h := sha256.New()
	for _, name := range names {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("srcdigest: %w", err)
		}
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(name)))
		h.Write(n[:])
		h.Write([]byte(name))
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
