package broker

import (
	"fmt"

	"github.com/commy/commy/internal/ipc"
)

// validTenant checks a tenant id: [A-Za-z0-9.-]{1,64}, not "." or "..". It
// never holds '_', which separates it from the service name in a service id.
func validTenant(s string) error {
	if !validChars(s, 64, false) {
		return fmt.Errorf("%w: tenant id %q: want 1-64 of [A-Za-z0-9.-], not . or ..", ipc.ErrInvalidName, s)
	}
	return nil
}

// validName checks a service or variable name: [A-Za-z0-9._-]{1,128}, not
// "." or "..".
func validName(what, s string) error {
	if !validChars(s, 128, true) {
		return fmt.Errorf("%w: %s %q: want 1-128 of [A-Za-z0-9._-], not . or ..", ipc.ErrInvalidName, what, s)
	}
	return nil
}

func validChars(s string, maxLen int, underscore bool) bool {
	if len(s) == 0 || len(s) > maxLen || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '-':
		case c == '_' && underscore:
		default:
			return false
		}
	}
	return true
}

// serviceID is how the protocol names a service.
func serviceID(tenant, service string) string { return tenant + "_" + service }

// validServiceID checks the shape of a service id.
func validServiceID(id string) error {
	_, _, err := splitServiceID(id)
	return err
}

// splitServiceID returns the tenant and service a service id names: a
// tenant id never holds '_', so the first one separates them.
func splitServiceID(id string) (tenant, service string, err error) {
	for i := 0; i < len(id); i++ {
		if id[i] == '_' {
			if validTenant(id[:i]) == nil && validName("service", id[i+1:]) == nil {
				return id[:i], id[i+1:], nil
			}
			break
		}
	}
	return "", "", fmt.Errorf("%w: %q: want <tenant_id>_<service_name>", ipc.ErrInvalidServiceID, id)
}
