package broker

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/commy/commy/internal/paths"
)

// openAppend opens the append-only log file at path for the broker, creating
// it with mode 0600. It refuses a path that is a symbolic link (O_NOFOLLOW),
// a directory another user could change, and a file that is neither a
// regular file of the broker's user with one link nor a character device
// (such as /dev/null): another user must not choose what the broker writes
// to.
func openAppend(path string) (*os.File, error) {
	if err := paths.CheckDir(filepath.Dir(path), os.Geteuid()); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%w: %s is a symbolic link", paths.ErrInsecure, path)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeCharDevice != 0:
	case !fi.Mode().IsRegular():
		err = fmt.Errorf("%w: %s is not a regular file", paths.ErrInsecure, path)
	case st == nil || int(st.Uid) != os.Geteuid():
		err = fmt.Errorf("%w: %s belongs to uid %d, not to the broker's uid %d", paths.ErrInsecure, path, paths.Owner(fi), os.Geteuid())
	case st.Nlink != 1:
		err = fmt.Errorf("%w: %s has %d hard links", paths.ErrInsecure, path, st.Nlink)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// migrateTenants moves the tenant directories of a data directory laid out
// before tenants had their own directory (<data-dir>/<tenant>) to
// <data-dir>/tenants/<tenant>, one rename each, so that a crash midway
// leaves every tenant in one place or the other and the next start goes on.
// A tenant that was itself named "tenants" is moved aside first.
func (b *Broker) migrateTenants() error {
	dir := b.cfg.DataDir
	root := filepath.Join(dir, tenantsDir)
	aside := filepath.Join(dir, "_tenants-migrating") // no tenant id holds '_'
	if fi, err := os.Lstat(root); err == nil && fi.IsDir() && b.oldTenantDir(root) {
		if err := os.Rename(root, aside); err != nil {
			return fmt.Errorf("broker: migrate: %w", err)
		}
	}
	if err := os.Mkdir(root, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("broker: tenants directory: %w", err)
	}
	if fi, err := os.Lstat(root); err != nil || !fi.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", paths.ErrInsecure, root)
	}
	if _, err := os.Lstat(aside); err == nil {
		if err := os.Rename(aside, filepath.Join(root, tenantsDir)); err != nil {
			return fmt.Errorf("broker: migrate: %w", err)
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("broker: migrate: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		if name == tenantsDir || !e.IsDir() || validTenant(name) != nil || !onlyServiceFiles(filepath.Join(dir, name)) {
			continue
		}
		if err := os.Rename(filepath.Join(dir, name), filepath.Join(root, name)); err != nil {
			return fmt.Errorf("broker: migrate tenant %s: %w", name, err)
		}
		b.log.Info("data directory: tenant moved under tenants/", "tenant", name)
	}
	return nil
}

// onlyServiceFiles reports whether dir holds nothing but service files, as
// a tenant directory does; anything else there (a socket, a directory) is
// not the broker's to move.
func onlyServiceFiles(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != memSuffix {
			return false
		}
	}
	return true
}

// oldTenantDir reports whether dir holds service files itself, as the
// directory of a tenant named "tenants" did before the migration.
func (b *Broker) oldTenantDir(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !e.IsDir() && filepath.Ext(e.Name()) == memSuffix {
			return true
		}
	}
	return false
}
