#!/usr/bin/env bash
# Installs a commy .deb into a clean Debian chroot made for this run, starts
# `commy serve` there (systemd is not PID 1 in a chroot), talks to it as root,
# as a member of the commy group and as another user, then purges the package.
# Usage (as root): contrib/debian/test-install.sh bin/commy_*.deb
# Needs mmdebstrap or debootstrap, and Debian's mirror (DEBIAN_MIRROR).
set -euo pipefail
deb=$(realpath "$1")
suite=${DEBIAN_SUITE:-bookworm}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
start=$SECONDS
root=$(mktemp -d /tmp/commy-chroot.XXXXXX)
serve_pid=
cleanup() {
	if [ -n "$serve_pid" ]; then kill "$serve_pid" 2>/dev/null || true; fi
	mountpoint -q "$root/proc" && umount "$root/proc"
	rm -rf "$root"
}
trap cleanup EXIT
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }
in_root() { chroot "$root" "$@"; }

if command -v mmdebstrap >/dev/null; then
	mmdebstrap --quiet --variant=minbase "$suite" "$root" "$mirror"
else
	debootstrap --variant=minbase "$suite" "$root" "$mirror" >/dev/null
fi
echo "test-install: $suite chroot in $((SECONDS - start))s"

cp "$deb" "$root/tmp/commy.deb"
in_root dpkg -i /tmp/commy.deb >/dev/null
for f in /usr/bin/commy /usr/share/man/man1/commy.1.gz /etc/commy/policy.toml.example \
	/usr/lib/systemd/system/commy.socket /usr/lib/systemd/system/commy.service \
	/usr/share/bash-completion/completions/commy /usr/share/zsh/vendor-completions/_commy \
	/usr/share/fish/vendor_completions.d/commy.fish; do
	[ -f "$root$f" ] || fail "$f not installed"
done
grep -q '^ExecStart=/usr/bin/commy serve' "$root/usr/lib/systemd/system/commy.service" || fail "ExecStart is not /usr/bin/commy"
in_root getent passwd commy >/dev/null || fail "no commy user"
in_root getent group commy >/dev/null || fail "no commy group"
in_root commy version | grep -q '^protocol 1$' || fail "commy version"

# The broker, with the example policy (it grants admin to group commy).
mount -t proc proc "$root/proc"
chroot "$root" commy serve --policy /etc/commy/policy.toml.example >"$root/tmp/serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do [ -S "$root/run/commy/commy.sock" ] && break; sleep 0.1; done
[ -S "$root/run/commy/commy.sock" ] || { cat "$root/tmp/serve.log"; fail "no socket"; }

in_root useradd -m -G commy alice
in_root useradd -m bob
as() { local u=$1; shift; chroot --userspec="$u:$u" --groups="$(in_root id -Gn "$u" | tr ' ' ,)" "$root" commy --socket /run/commy/commy.sock "$@"; }
status() { set +e; "$@" >/dev/null 2>&1; local s=$?; set -e; echo $s; }

in_root commy create plant >/dev/null
file=$(as alice create --json plant/boiler | sed -n 's/.*"file_path": "\(.*\)".*/\1/p') || fail "alice (group commy) cannot create a service"
as alice alloc plant/boiler temperature 20.5 >/dev/null
[ "$(in_root commy get --format text plant/boiler temperature)" = 20.5 ] || fail "get"
[ "$(status as bob get plant/boiler temperature)" = 77 ] || fail "bob was not denied with status 77"
[ "$(status in_root commy get plant/boiler nope)" = 66 ] || fail "a missing variable is not status 66"
in_root commy tenants --json | grep -q '"tenant_id": "plant"' || fail "tenants --json"
case "$file" in /var/lib/commy/*) ;; *) fail "service file $file not under /var/lib/commy" ;; esac
in_root test -f "$file" || fail "no service file at $file"

kill "$serve_pid"
wait "$serve_pid" || fail "commy serve exited with $?"
serve_pid=
umount "$root/proc"

in_root dpkg --purge commy >/dev/null
[ ! -e "$root/usr/bin/commy" ] || fail "purge left /usr/bin/commy"
! in_root getent passwd commy >/dev/null || fail "purge left the commy user"
echo "test-install: ok in $((SECONDS - start))s"
