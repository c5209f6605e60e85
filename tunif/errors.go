package tunif

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Errors a caller can act on. Create's errors wrap one of them where it
// applies (test with errors.Is) together with the underlying cause; the text
// says the operation, the object and the cause. The remedy ("run it with
// sudo", "sudo modprobe tun", "ip link del NAME") is the CLI's to add.
var (
	// ErrPermission: the process lacks CAP_NET_ADMIN in the network
	// namespace: EPERM or EACCES from opening /dev/net/tun, from TUNSETIFF
	// or from netlink.
	ErrPermission = errors.New("needs CAP_NET_ADMIN")
	// ErrNoTUN: /dev/net/tun is missing, or the tun module is not loaded
	// (ENOENT, ENODEV or ENXIO on open).
	ErrNoTUN = errors.New("no TUN driver")
	// ErrNameInUse: an interface of the requested name already exists.
	ErrNameInUse = errors.New("interface name in use")
)

// createError wraps the cause of a failed Create, adding the kind of failure
// (one of the Err variables, or nil) when there is one.
func createError(name string, kind, cause error) error {
	if kind == nil {
		return fmt.Errorf("tunif: create TUN %q: %w", name, cause)
	}
	return fmt.Errorf("tunif: create TUN %q: %w: %w", name, kind, cause)
}

// configureError wraps the cause of a failed Configure, as createError does.
func configureError(name string, kind, cause error) error {
	if kind == nil {
		return fmt.Errorf("tunif: configure %q: %w", name, cause)
	}
	return fmt.Errorf("tunif: configure %q: %w: %w", name, kind, cause)
}

// permission returns ErrPermission if err is EPERM or EACCES, else nil.
func permission(err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return ErrPermission
	}
	return nil
}
