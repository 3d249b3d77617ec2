# shellcheck shell=bash
# Shared helpers for tests/vm/evs-vm: logging, host dependencies, cache lock.
# Sourced, never executed.

# Harness failures (bad usage, missing tools, guest never reported) all exit
# with 125 so that callers can tell them apart from the guest script's status.
readonly EVS_VM_EXIT_HARNESS=125

evs_log() { printf 'evs-vm: %s\n' "$*" >&2; }
evs_die() {
    printf 'evs-vm: error: %s\n' "$*" >&2
    exit "$EVS_VM_EXIT_HARNESS"
}
# Only with EVS_VM_VERBOSE=1.
evs_debug() {
    if [[ ${EVS_VM_VERBOSE:-0} == 1 ]]; then
        printf 'evs-vm: %s\n' "$*" >&2
    fi
    return 0
}

# Host tools the harness needs, as "command:debian-package".  Commands in
# sbin are looked up with sbin on PATH (set by the caller).
readonly EVS_VM_HOST_DEPS=(
    qemu-system-x86_64:qemu-system-x86
    busybox:busybox-static
    cpio:cpio
    depmod:kmod
    modprobe:kmod
    cryptsetup:cryptsetup-bin
    dmsetup:dmsetup
    blkid:util-linux
    losetup:mount
    flock:util-linux
    timeout:coreutils
    gzip:gzip
    xz:xz-utils
    dpkg-deb:dpkg
    apt-get:apt
)

_evs_apt_updated=0
# apt-get update, at most once per run.
evs_apt_update() {
    if [[ $_evs_apt_updated == 0 ]]; then
        evs_log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
            || evs_die "apt-get update failed"
        _evs_apt_updated=1
    fi
}

# Install whatever host packages are missing (update the lists only then).
evs_ensure_host_deps() {
    local dep cmd pkg missing=()
    for dep in "${EVS_VM_HOST_DEPS[@]}"; do
        cmd=${dep%%:*} pkg=${dep#*:}
        if ! command -v "$cmd" >/dev/null 2>&1; then
            [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
        fi
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || evs_die "missing host packages (${missing[*]}) and not root to install them"
    evs_apt_update
    evs_log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || evs_die "apt-get install ${missing[*]} failed"
}

# Take / drop the exclusive cache lock (fd 9).  Callers run plain commands in
# between (not a function under `||`, which would switch off errexit); if the
# process dies the kernel drops the lock.
evs_lock_cache() {
    mkdir -p "$EVS_VM_CACHE" || evs_die "cannot create cache dir $EVS_VM_CACHE"
    exec 9>>"$EVS_VM_CACHE/lock"
    if ! flock -n 9; then
        evs_log "waiting for the cache lock $EVS_VM_CACHE/lock"
        flock 9
    fi
}
evs_unlock_cache() { exec 9>&-; }

# sha256 of stdin, hex only.
evs_sha256() { sha256sum | cut -c1-64; }
