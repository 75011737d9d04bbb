#!/bin/sh
# Runs a command as if on its own small container, on one machine, as root:
# its own mount namespace where /tmp/nix is a directory of the caller's (or an
# empty tmpfs), the host's /nix hidden where there is one, optionally a memory
# cgroup and an unprivileged uid. The demo and the test harness both use it.
#
#   isolate.sh [--nix-dir DIR | --nix-tmpfs BYTES] [--hide-nix] [--hide PATH]...
#              [--expose SRC:AT]... [--cgroup DIR] [--uid N] [--path PATH] -- CMD [ARG...]
#
# --expose SRC:AT bind-mounts SRC (a dir or a file) over the existing AT, e.g.
# a checkout where an unprivileged uid can reach it, or a test's own /etc/group.
#
# --hide PATH covers a host directory with an empty tmpfs (a file with
# /dev/null); a PATH the host doesn't have needs no hiding. --hide-nix is
# --hide /nix.
#
# Nothing on the host is created, moved or deleted. /tmp/nix needs a mount
# point, and a fresh machine has none, so /tmp itself gets a private tmpfs in
# the namespace, every entry of the host's /tmp except `nix` is bind-mounted
# back at its own path (reached through an fd opened before the tmpfs covered
# it), and /tmp/nix is made in the private tmpfs. Anything else the command
# writes at the top of /tmp stays private to it, as on a real container.
# Any step that fails ends the run with code 125 and an "isolate:" line, so a
# "container" never silently sees the host's store.
set -eu
# Setup uses the system's tools whatever PATH the command is to run with.
caller_path=${PATH:-/usr/bin:/bin}
PATH=/usr/sbin:/usr/bin:/sbin:/bin

fail() { echo "isolate: $*" >&2; exit 125; }

if [ "${1:-}" != --inside ]; then
  [ "$(id -u)" = 0 ] || fail "needs root (mount namespaces, bind mounts, cgroups)"
  exec /usr/bin/unshare -m --propagation private -- /bin/sh "$0" --inside "$@"
fi
shift

nix_dir= nix_tmpfs= hide= expose= cgroup= uid= run_path=$caller_path
while [ $# -gt 0 ]; do
  case $1 in
    --nix-dir) nix_dir=$2; shift 2 ;;
    --nix-tmpfs) nix_tmpfs=$2; shift 2 ;;
    --hide-nix) hide="$hide /nix"; shift ;;
    --hide) case $2 in /*) hide="$hide $2" ;; *) fail "--hide needs an absolute path, got '$2'" ;; esac; shift 2 ;;
    --expose) expose="$expose $2"; shift 2 ;;
    --cgroup) cgroup=$2; shift 2 ;;
    --uid) uid=$2; shift 2 ;;
    --path) run_path=$2; shift 2 ;;
    --) shift; break ;;
    *) fail "unknown option '$1'" ;;
  esac
done
[ $# -gt 0 ] || fail "no command given"
[ -n "$nix_dir" ] || [ -n "$nix_tmpfs" ] || fail "give --nix-dir DIR or --nix-tmpfs BYTES"
# Bind sources are opened before /tmp is covered; `mount` must not resolve them
# again by name (that would land in the new tmpfs), hence --no-canonicalize.
bind() { mount --no-canonicalize --rbind "$1" "$2" || fail "cannot bind $1 at $2"; }
[ -z "$nix_dir" ] || [ -d "$nix_dir" ] || fail "--nix-dir $nix_dir is not a directory"
nix_dir_abs=$(cd "${nix_dir:-/}" && pwd -P)
# Resolved now, while the host's /tmp is still in place: SRC:AT pairs, sources made absolute.
exposed=
for pair in $expose; do
  src=$(realpath -e "${pair%%:*}") || fail "--expose source ${pair%%:*} does not exist"
  at=${pair#*:}
  [ -e "$at" ] || fail "--expose mount point $at does not exist"
  exposed="$exposed $src:$at"
done

exec 3</tmp
# Sources below /tmp are reached through fd 3 once the tmpfs covers /tmp.
via_fd() { case $1 in /tmp/*) echo "/proc/self/fd/3/${1#/tmp/}" ;; *) echo "$1" ;; esac; }
mount -t tmpfs -o mode=1777 tmpfs /tmp || fail "cannot mount a private /tmp"
# Other programs create and delete entries meanwhile: one that vanished mid-way is simply not there.
for entry in /proc/self/fd/3/* /proc/self/fd/3/.[!.]* /proc/self/fd/3/..?*; do
  [ -e "$entry" ] || [ -L "$entry" ] || continue
  name=${entry#/proc/self/fd/3/}
  [ "$name" = nix ] && continue
  if [ -L "$entry" ]; then
    target=$(readlink "$entry") || continue
    ln -s "$target" "/tmp/$name"
    continue
  fi
  if [ -d "$entry" ]; then mkdir "/tmp/$name"; else : >"/tmp/$name"; fi
  if ! mount --no-canonicalize --rbind "$entry" "/tmp/$name" 2>/dev/null; then
    [ -e "$entry" ] && fail "cannot bind /tmp/$name"
    rmdir "/tmp/$name" 2>/dev/null || rm -f "/tmp/$name"
  fi
done
mkdir -m 755 /tmp/nix
if [ -n "$nix_tmpfs" ]; then
  mount -t tmpfs -o "size=$nix_tmpfs,mode=755" tmpfs /tmp/nix || fail "cannot mount a $nix_tmpfs-byte tmpfs at /tmp/nix"
else
  bind "$(via_fd "$nix_dir_abs")" /tmp/nix
fi
exec 3<&-

# What the host has at a hidden path is covered; what it doesn't have can't leak.
for p in $hide; do
  if [ -d "$p" ]; then
    mount -t tmpfs -o size=1m,mode=755 tmpfs "$p" || fail "cannot hide $p"
    [ -z "$(ls -A "$p")" ] || fail "$p is still visible"
  elif [ -e "$p" ]; then
    mount --bind /dev/null "$p" || fail "cannot hide $p"
  fi
done
for pair in $exposed; do bind "${pair%%:*}" "${pair#*:}"; done
if [ -n "$cgroup" ]; then echo $$ >"$cgroup/cgroup.procs" || fail "cannot join cgroup $cgroup"; fi

SETPRIV=$(command -v setpriv) || fail "setpriv not found (util-linux)"
export PATH="$run_path"
if [ -n "$uid" ]; then exec "$SETPRIV" --reuid="$uid" --regid="$uid" --clear-groups -- "$@"; fi
exec "$@"
