package ebpf

import (
	"fmt"
	"path/filepath"
	"strings"
)

// maxPathLen is the longest watched path. The kernel reads at most 255 bytes
// of a path argument (PATH_KEY_LEN in probe.c less the NUL), so a longer
// argument, truncated, can never equal a watched path of at most 254 bytes.
const maxPathLen = 254

// checkPath accepts "" (no path, e.g. a memfd) or a clean absolute path.
func checkPath(path string) error {
	if path == "" {
		return nil
	}
	if !filepath.IsAbs(path) || filepath.Clean(path) != path || strings.IndexByte(path, 0) >= 0 || len(path) > maxPathLen {
		return fmt.Errorf("ebpf: watch path %q: must be clean, absolute and at most %d bytes", path, maxPathLen)
	}
	return nil
}

// kernelDev converts a stat(2) st_dev into the kernel's internal dev_t, as
// stored in super_block.s_dev: MKDEV(major, minor) = major<<20 | minor
// (include/linux/kdev_t.h). st_dev uses glibc's encoding (gnu_dev_major and
// gnu_dev_minor), which the kernel's new_encode_dev produces.
func kernelDev(stDev uint64) (uint64, error) {
	major := (stDev>>8)&0xfff | (stDev>>32)&^0xfff
	minor := stDev&0xff | (stDev>>12)&0xffffff00
	if major >= 1<<12 || minor >= 1<<20 {
		return 0, fmt.Errorf("ebpf: device %d:%d does not fit the kernel's dev_t", major, minor)
	}
	return major<<20 | minor, nil
}

// userDev is the inverse of kernelDev (gnu_dev_makedev of MAJOR and MINOR).
func userDev(kdev uint64) uint64 {
	major := kdev >> 20
	minor := kdev & (1<<20 - 1)
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12 | (major&^0xfff)<<32
}
