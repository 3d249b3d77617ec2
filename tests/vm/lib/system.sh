# shellcheck shell=bash
# System mode of tests/vm/evs-vm (`evs-vm system-run`): a Debian 12 guest with
# systemd as PID 1 and udev, the project installed with `meson install`, and
# disks hot-plugged from the host through QMP on the guest's request.
# Sourced by tests/vm/evs-vm after common.sh, kernel.sh, initramfs.sh and
# qemu.sh, whose functions it reuses (kernel cache, base initramfs, qemu
# command line, console filter).
#
# Cache (EVS_VM_CACHE, default /var/cache/evs-cryptd-vm):
#   system/lock                        flock'd while an image is built
#   system/<key>/rootfs.img            ext4 image of the debootstrap'ed tree
#   system/<key>/packages              what it holds (dpkg -l), for debugging
#   system/<key>/.complete             written last: the entry is whole
# <key> hashes the package list, the suite, the mirror and
# EVS_SYSTEM_IMAGE_VERSION: change any of them and a new image is built.
#
# Per run nothing is copied: the cached image is the guest's /dev/vda opened
# with snapshot=on (writes go to a throw-away qemu temp file, the cache
# stays read-only and can be shared by concurrent runs).  What a run adds --
# the `meson install` tree, the kernel modules, the state directory, the test
# script and its evs-test.service -- travels in the per-run initramfs under
# /overlay, and the initramfs's /init (tests/vm/system-init.sh) copies it onto
# the mounted root before switch_root'ing to /lib/systemd/systemd.

# Bump when the way the image is built or configured changes.
readonly EVS_SYSTEM_IMAGE_VERSION=2
readonly EVS_SYSTEM_SUITE=bookworm
readonly EVS_SYSTEM_PACKAGES=systemd,systemd-sysv,udev,kmod,cryptsetup-bin,dmsetup,libcryptsetup12,libjson-c5,libssl3,libdevmapper1.02.1,libblkid1,util-linux,e2fsprogs,procps,python3
# Free space left in the root file system (MiB).
readonly EVS_SYSTEM_FREE_MB=512
# Kernel modules put into the guest's /lib/modules (with their dependencies)
# for udev and modprobe@.service; the others are simply absent.
readonly EVS_SYSTEM_MODULES=(
    virtio_pci virtio_blk virtio_console virtio-rng
    dm-mod dm-crypt xts ecb af_alg algif_skcipher algif_hash cryptd crypto_simd aesni-intel
    loop ext4 crc32c_generic
)
# The guest asks for hot-plug through this virtio-serial port.
readonly EVS_SYSTEM_CTL_PORT=evs.ctl

evs_system_usage() {
    cat <<'EOF'
Usage:
  evs-vm system-run [OPTIONS] SCRIPT [ARGS...]

Boots a Debian 12 guest with systemd + udev (image built once with
debootstrap and cached), the project installed with `meson install`, and runs
SCRIPT as root from the oneshot unit evs-test.service after multi-user.target.

Options:
  --build DIR                 build tree to install from (default <repo>/build).
                              Installed as is when configured with
                              --prefix=/usr; otherwise a build tree DIR/evs-vm-system
                              (prefix /usr) is configured and built from it.
  --disk-file PATH:SERIAL[:hotplug]
                              raw image as a virtio disk with that serial; with
                              :hotplug only registered: the guest plugs it with
                              `evs-vm-ctl plug SERIAL...`, unplugs it with
                              `evs-vm-ctl unplug SERIAL...` (QMP device_add/del;
                              several serials: back to back, at once)
  --file HOST:GUEST           copy a host file or directory into the guest
  --no-install                nothing from a build tree: SCRIPT installs the project
                              itself (the Debian package suite copies a .deb in with --file)
  --timeout SECONDS           kill the VM after this long (default 900)
  --verbose                   show the boot messages (on stderr)

Exit status: SCRIPT's; 125 when the harness or the VM failed.
Environment: EVS_VM_CACHE EVS_VM_MEM EVS_VM_SMP (default 2) EVS_VM_KVM
EVS_VM_APPEND EVS_VM_CONSOLE_LOG EVS_VM_VERBOSE EVS_SYSTEM_MIRROR
EOF
}

# The Debian mirror apt uses on this host (so that a machine with a local
# mirror uses it), else deb.debian.org.  EVS_SYSTEM_MIRROR overrides.
evs_system_mirror() {
    local m
    if [[ -n ${EVS_SYSTEM_MIRROR:-} ]]; then
        printf '%s\n' "$EVS_SYSTEM_MIRROR"
        return 0
    fi
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk '
            /^deb[ \t]/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { u = $i; break }
                          if (u ~ /\/debian\/?$/) { print u; exit } u = "" }
            /^URIs:/    { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }')
    printf '%s\n' "${m:-http://deb.debian.org/debian}"
}

# Host tools of the system mode (beyond common.sh's list).
evs_system_host_deps() {
    local missing=() dep
    for dep in debootstrap:debootstrap mkfs.ext4:e2fsprogs /usr/bin/python3:python3-minimal; do
        command -v "${dep%%:*}" >/dev/null 2>&1 || missing+=("${dep#*:}")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || evs_die "missing host packages (${missing[*]}) and not root to install them"
    evs_apt_update
    evs_log "apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >&2 || evs_die "apt-get install ${missing[*]} failed"
}

# Sets EVS_SYSTEM_IMAGE to the cached root image, building it if needed.
evs_system_image() {
    local mirror key dir tmp t0=$SECONDS
    mirror=$(evs_system_mirror)
    key=$(printf '%s\n' "$EVS_SYSTEM_IMAGE_VERSION" "$EVS_SYSTEM_SUITE" "$mirror" "$EVS_SYSTEM_PACKAGES" \
        "$EVS_SYSTEM_FREE_MB" | evs_sha256 | cut -c1-16)
    dir=$EVS_VM_CACHE/system/$key
    EVS_SYSTEM_IMAGE=$dir/rootfs.img
    [[ -e $dir/.complete ]] && return 0

    mkdir -p "$EVS_VM_CACHE/system"
    exec 8>>"$EVS_VM_CACHE/system/lock"
    if ! flock -n 8; then
        evs_log "waiting for the system image lock $EVS_VM_CACHE/system/lock"
        flock 8
    fi
    if [[ -e $dir/.complete ]]; then
        exec 8>&-
        return 0
    fi
    # We hold the lock: any .tmp.* left is from a build that died.
    rm -rf "$EVS_VM_CACHE"/system/.tmp.*
    tmp=$(mktemp -d "$EVS_VM_CACHE/system/.tmp.XXXXXX")
    evs_log "building the system image with debootstrap from $mirror (once, a few minutes; cached as system/$key)"
    if ! debootstrap --variant=minbase --include="$EVS_SYSTEM_PACKAGES" \
        "$EVS_SYSTEM_SUITE" "$tmp/root" "$mirror" >"$tmp/debootstrap.log" 2>&1; then
        tail -n 20 "$tmp/debootstrap.log" | sed 's/^/evs-vm: debootstrap: /' >&2
        evs_die "debootstrap failed (full log: $tmp/debootstrap.log)"
    fi
    evs_system_configure "$tmp/root"
    # shellcheck disable=SC2016  # dpkg-query's format, not the shell's
    chroot "$tmp/root" dpkg-query -W -f='${Package} ${Version}\n' >"$tmp/packages" 2>/dev/null || true
    rm -rf "$tmp/root"/var/cache/apt/archives/*.deb "$tmp/root"/var/lib/apt/lists/*_Packages

    local mb
    mb=$(du -sm "$tmp/root" | cut -f1)
    mkfs.ext4 -q -F -L evs-root -E root_owner=0:0 -d "$tmp/root" "$tmp/rootfs.img" \
        "$((mb + mb / 4 + EVS_SYSTEM_FREE_MB))M" >/dev/null || evs_die "mkfs.ext4 -d failed"
    rm -rf "$tmp/root"
    touch "$tmp/.complete"
    rm -rf "$dir"
    mv "$tmp" "$dir"
    exec 8>&-
    evs_log "system image built in $((SECONDS - t0))s: $dir"
}

# One-time configuration of the debootstrap'ed tree $1 (no daemons run).
evs_system_configure() {
    local root=$1 u
    printf 'evs-vm\n' >"$root/etc/hostname"
    printf '127.0.0.1 localhost evs-vm\n::1 localhost\n' >"$root/etc/hosts"
    printf '/dev/vda / ext4 rw,noatime 0 1\n' >"$root/etc/fstab"
    # Root without password: `--shell`-style debugging on the serial line.
    chroot "$root" passwd -dq root >/dev/null 2>&1 || sed -i 's/^root:[^:]*:/root::/' "$root/etc/shadow"
    ln -sfn /lib/systemd/system/multi-user.target "$root/etc/systemd/system/default.target"
    # Nothing that waits for a human, runs periodic jobs, wants a network or
    # only costs boot time under TCG.
    for u in getty@.service serial-getty@.service console-getty.service getty-static.service \
        systemd-firstboot.service apt-daily.timer apt-daily-upgrade.timer fstrim.timer \
        e2scrub_all.timer e2scrub_reap.service dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
        systemd-networkd-wait-online.service systemd-timesyncd.service systemd-journal-flush.service \
        systemd-update-utmp.service systemd-update-utmp-runlevel.service \
        proc-sys-fs-binfmt_misc.automount systemd-binfmt.service \
        sys-kernel-debug.mount sys-kernel-tracing.mount dev-hugepages.mount; do
        ln -sfn /dev/null "$root/etc/systemd/system/$u"
    done
    # The journal stays in /run (volatile): nothing survives a run anyway.
    mkdir -p "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/evs-vm.conf"
}

# Parse `--disk-file PATH:SERIAL[:hotplug]` into EVS_DISK_ARGS (boot disks)
# or EVS_SYSTEM_HOTPLUG (SERIAL=PATH lines for the controller).
evs_system_add_disk() {
    local spec=$1 path serial hot=0
    if [[ $spec == *:hotplug ]]; then
        hot=1 spec=${spec%:hotplug}
    fi
    [[ $spec == *:* ]] || evs_die "--disk-file $1: want PATH:SERIAL[:hotplug]"
    serial=${spec##*:} path=${spec%:*}
    check_serial "$serial"
    [[ -f $path ]] || evs_die "--disk-file $path: no such file"
    path=$(readlink -f "$path")
    if [[ $hot == 1 ]]; then
        EVS_SYSTEM_HOTPLUG+=("$serial=$path")
    else
        add_disk "$path" "$serial"
    fi
}

# Sets EVS_SYSTEM_BUILD to a build tree configured with prefix /usr,
# sysconfdir /etc and localstatedir /var (where Debian expects the files):
# $1 itself when it is, else $1/evs-vm-system, configured from the same
# sources once and rebuilt (incrementally) every run.
evs_system_build_dir() {
    local build=$1 opts
    opts=$(meson introspect --buildoptions "$build" 2>/dev/null |
        /usr/bin/python3 -c 'import json, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
print(o.get("prefix"), o.get("sysconfdir"), o.get("localstatedir"))') ||
        evs_die "--build $build: not a meson build directory"
    if [[ $opts == "/usr /etc /var" || $opts == "/usr etc var" ]]; then
        EVS_SYSTEM_BUILD=$build
        return 0
    fi
    EVS_SYSTEM_BUILD=$build/evs-vm-system
    if [[ ! -e $EVS_SYSTEM_BUILD/build.ninja ]]; then
        evs_log "$build has prefix/sysconfdir/localstatedir '$opts'; configuring $EVS_SYSTEM_BUILD with prefix /usr"
        rm -rf "$EVS_SYSTEM_BUILD"
        meson setup "$EVS_SYSTEM_BUILD" "$EVS_REPO" --prefix=/usr --sysconfdir=/etc --localstatedir=/var \
            -Dtests=disabled >"$EVS_TMP/meson-setup.log" 2>&1 ||
            evs_die "meson setup $EVS_SYSTEM_BUILD failed: $(tail -n 5 "$EVS_TMP/meson-setup.log")"
    fi
    meson compile -C "$EVS_SYSTEM_BUILD" >"$EVS_TMP/meson-compile.log" 2>&1 ||
        evs_die "meson compile -C $EVS_SYSTEM_BUILD failed: $(tail -n 20 "$EVS_TMP/meson-compile.log")"
}

# Move $1/{bin,sbin,lib,lib64}/* under $1/usr: the guest has a merged /usr
# (those are symlinks there), and the overlay is copied onto it file by file.
evs_system_merge_usr() {
    local root=$1 d
    for d in bin sbin lib lib64; do
        [[ -d $root/$d && ! -L $root/$d ]] || continue
        mkdir -p "$root/usr/$d"
        cp -a "$root/$d/." "$root/usr/$d/"
        rm -rf "${root:?}/$d"
    done
}

# Fill the per-run overlay tree $1 (copied onto the guest's root at boot).
evs_system_overlay() {
    local root=$1 spec host guest f kroot closure ko
    mkdir -p "$root"
    # 1. The project, as `meson install` puts it (unless --no-install).
    # Without --no-rebuild: `meson test` only builds what the tests depend on, and
    # install wants everything (man pages...).
    if [[ $EVS_SYSTEM_INSTALL == 1 ]]; then
        meson install -C "$EVS_SYSTEM_BUILD" --destdir "$root" --quiet \
            >"$EVS_TMP/meson-install.log" 2>&1 ||
            evs_die "meson install failed: $(tail -n 10 "$EVS_TMP/meson-install.log")"
    fi

    # 2. Kernel modules for udev/modprobe in the guest (the initramfs has its own).
    kroot=$(evs_kernel_dir "$EVS_KVER")
    mkdir -p "$EVS_TMP/mods/lib/modules/$EVS_KVER"
    cp "$kroot/lib/modules/$EVS_KVER"/modules.order "$kroot/lib/modules/$EVS_KVER"/modules.builtin* \
        "$EVS_TMP/mods/lib/modules/$EVS_KVER/"
    closure=$(evs_module_closure "$kroot" "$EVS_KVER" "${EVS_SYSTEM_MODULES[@]}") || exit
    while IFS= read -r ko; do
        mkdir -p "$EVS_TMP/mods/${ko%/*}"
        cp "$kroot/$ko" "$EVS_TMP/mods/$ko"
    done <<<"$closure"
    depmod -b "$EVS_TMP/mods" "$EVS_KVER" || evs_die "depmod failed for the guest's modules"
    mkdir -p "$root/usr/lib/modules"
    mv "$EVS_TMP/mods/lib/modules/$EVS_KVER" "$root/usr/lib/modules/"

    # 3. The test and its unit.
    mkdir -p "$root/usr/lib/evs-vm" "$root/usr/bin" "$root/etc/evs-vm" "$root/etc/systemd/system/multi-user.target.wants"
    install -m 0755 "$EVS_SCRIPT" "$root/usr/lib/evs-vm/test"
    install -m 0755 "$EVS_VM_DIR/lib/system-ctl-guest.sh" "$root/usr/bin/evs-vm-ctl"
    {
        printf 'set --'
        for f in "${EVS_SCRIPT_ARGS[@]}"; do
            printf ' %s' "$(evs_shquote "$f")"
        done
        printf '\n'
    } >"$root/etc/evs-vm/args"
    printf 'EVS_VM_TOKEN=%s\nEVS_VM_SCRIPT_NAME=%s\n' "$EVS_TOKEN" "$(evs_shquote "${EVS_SCRIPT##*/}")" \
        >"$root/etc/evs-vm/config"
    cat >"$root/usr/lib/evs-vm/run" <<'EOF'
#!/bin/bash
# ExecStart= of evs-test.service: the test script, its output on the console.
. /etc/evs-vm/config
. /etc/evs-vm/args
# Kernel messages would interleave with the test output: emergencies only.
echo "1 4 1 7" >/proc/sys/kernel/printk
echo "EVS-VM-START:$EVS_VM_TOKEN"
cd /root || exit 1
export EVS_IN_VM=1 EVS_VM_SYSTEM=1 HOME=/root LANG=C.UTF-8
exec /usr/lib/evs-vm/test "$@" </dev/null
EOF
    cat >"$root/usr/lib/evs-vm/done" <<'EOF'
#!/bin/bash
# ExecStopPost= of evs-test.service: the exit marker, then power off.
. /etc/evs-vm/config
if [[ $EXIT_CODE == exited ]]; then rc=$EXIT_STATUS; else rc=125; echo "evs-vm: test ended by $EXIT_CODE $EXIT_STATUS ($SERVICE_RESULT)"; fi
sync
echo "EVS-VM-EXIT:$EVS_VM_TOKEN:$rc"
systemctl --no-block poweroff --force
EOF
    chmod 0755 "$root/usr/lib/evs-vm/run" "$root/usr/lib/evs-vm/done"
    cat >"$root/etc/systemd/system/evs-test.service" <<'EOF'
[Unit]
Description=evs-vm test script
# Start once the system is up; nothing orders itself after this unit, so
# the services the test starts (evs-cryptd) never wait for it.
After=multi-user.target systemd-udev-settle.service systemd-udevd.service
Wants=systemd-udevd.service

[Service]
Type=oneshot
ExecStart=/usr/lib/evs-vm/run
ExecStopPost=/usr/lib/evs-vm/done
StandardInput=null
StandardOutput=tty
StandardError=inherit
TTYPath=/dev/console
TTYReset=no
TTYVHangup=no
TimeoutStartSec=infinity

[Install]
WantedBy=multi-user.target
EOF
    ln -sfn ../evs-test.service "$root/etc/systemd/system/multi-user.target.wants/evs-test.service"

    # 4. --file HOST:GUEST, last so they can override anything above.
    for spec in "${EVS_FILES[@]}"; do
        host=${spec%:/*} guest=/${spec##*:/}
        if [[ -d $host ]]; then
            mkdir -p "$root$guest"
            cp -a "$host/." "$root$guest/"
        else
            [[ $guest == */ ]] && guest+=${host##*/}
            mkdir -p "$root${guest%/*}"
            cp -L "$host" "$root$guest"
        fi
    done
    evs_system_merge_usr "$root"
}

cmd_system_run() {
    local build='' timeout=${EVS_VM_TIMEOUT:-900} spec t0=$SECONDS
    local disks=()
    # shellcheck disable=SC2034  # EVS_SHELL: read by evs_qemu_cmd
    # The test scripts' shared shell library (tests/lib/tap.sh) is always there.
    EVS_FILES=("$EVS_REPO/tests/lib:/usr/lib/evs-tests") EVS_SHELL=0 EVS_SCRIPT='' EVS_SCRIPT_ARGS=() EVS_SYSTEM_HOTPLUG=()
    EVS_SYSTEM_INSTALL=1
    while (($#)); do
        case $1 in
        --build | --disk-file | --file | --timeout)
            (($# >= 2)) || evs_die "$1 needs a value"
            set -- "$1=$2" "${@:3}"
            continue
            ;;
        --build=*) build=${1#*=} ;;
        --disk-file=*) disks+=("${1#*=}") ;;
        --file=*) EVS_FILES+=("${1#*=}") ;;
        --timeout=*) timeout=${1#*=} ;;
        --verbose) export EVS_VM_VERBOSE=1 ;;
        --no-install) EVS_SYSTEM_INSTALL=0 ;;
        -h | --help)
            evs_system_usage
            exit 0
            ;;
        --) shift; break ;;
        -*) evs_die "unknown option $1 (see evs-vm system-run --help)" ;;
        *) break ;;
        esac
        shift
    done
    (($#)) || evs_die "system-run needs a SCRIPT (see evs-vm system-run --help)"
    EVS_SCRIPT=$1 EVS_SCRIPT_ARGS=("${@:2}")
    [[ -f $EVS_SCRIPT ]] || evs_die "no such script: $EVS_SCRIPT"
    [[ $timeout =~ ^[0-9]+$ ]] || evs_die "bad timeout '$timeout'"
    build=${build:-$EVS_REPO/build}
    [[ -d $build ]] || evs_die "--build $build: no such directory"
    for spec in "${EVS_FILES[@]}"; do
        [[ $spec == *:/* ]] || evs_die "--file $spec: want HOSTPATH:/GUESTPATH"
        [[ -e ${spec%:/*} ]] || evs_die "--file $spec: no such host path ${spec%:/*}"
    done

    prepare_cache
    evs_system_host_deps
    evs_system_image

    EVS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/evs-vm.XXXXXX")
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    # shellcheck disable=SC2034  # EVS_NDISKS: counted by add_disk
    EVS_NDISKS=0 EVS_DISK_ARGS=()
    # The root file system first: /dev/vda.  snapshot=on: the guest's writes
    # go to a temporary file, the cached image is only read.
    EVS_DISK_ARGS+=(-drive "file=${EVS_SYSTEM_IMAGE//,/,,},if=none,id=root,format=raw,snapshot=on"
        -device "virtio-blk-pci,drive=root,serial=evs-root")
    for spec in "${disks[@]}"; do
        evs_system_add_disk "$spec"
    done

    [[ $EVS_SYSTEM_INSTALL == 0 ]] || evs_system_build_dir "$build"
    EVS_TOKEN=$(od -An -N8 -tx8 /dev/urandom | tr -d ' \n')
    local root=$EVS_TMP/initrd-root
    mkdir -p "$root"
    install -m 0755 "$EVS_VM_DIR/system-init.sh" "$root/init"
    evs_system_overlay "$root/overlay"
    EVS_INITRD=$EVS_TMP/initrd
    cp "$EVS_BASE_CPIO" "$EVS_INITRD"
    truncate -s %512 "$EVS_INITRD"
    evs_cpio "$root" >>"$EVS_INITRD"
    rm -rf "$root"
    evs_debug "prepared in $((SECONDS - t0))s"

    export EVS_VM_SMP=${EVS_VM_SMP:-2}
    local append=${EVS_VM_APPEND:-}
    EVS_VM_APPEND="systemd.show_status=error systemd.firstboot=off $append"
    evs_qemu_cmd
    EVS_VM_APPEND=$append
    local qmp=$EVS_TMP/qmp.sock ctl=$EVS_TMP/ctl.sock
    EVS_QEMU+=(
        -qmp "unix:$qmp,server=on,wait=off"
        -device virtio-serial-pci
        -chardev "socket,id=evsctl,path=$ctl,server=on,wait=off"
        -device "virtserialport,chardev=evsctl,name=$EVS_SYSTEM_CTL_PORT"
    )
    evs_debug "qemu: ${EVS_QEMU[*]}"

    # The host side of hot-plug: serves the guest's requests until qemu exits.
    /usr/bin/python3 "$EVS_VM_DIR/lib/system-ctl.py" "$qmp" "$ctl" "${EVS_SYSTEM_HOTPLUG[@]}" \
        2>"$EVS_TMP/ctl.log" &
    local ctl_pid=$!

    local status_file=$EVS_TMP/status log=${EVS_VM_CONSOLE_LOG:-$EVS_TMP/console.log}
    : >"$log"
    local rcs t1=$SECONDS
    set +e
    timeout --foreground -k 5 "$timeout" "${EVS_QEMU[@]}" </dev/null 2>"$EVS_TMP/qemu.err" |
        evs_console_filter "$EVS_TOKEN" "$status_file" "$log"
    rcs=("${PIPESTATUS[@]}")
    kill "$ctl_pid" 2>/dev/null
    wait "$ctl_pid" 2>/dev/null
    set -e
    evs_debug "guest ran $((SECONDS - t1))s, qemu exit ${rcs[0]}, total $((SECONDS - t0))s"
    if [[ ${EVS_VM_VERBOSE:-0} == 1 && -s $EVS_TMP/ctl.log ]]; then
        sed 's/^/evs-vm: ctl: /' "$EVS_TMP/ctl.log" >&2
    fi

    if [[ -s $status_file ]]; then
        exit "$(<"$status_file")"
    fi
    local why panic
    panic=$(grep -m1 -a 'Kernel panic' "$log" || true)
    if ((rcs[0] == 124 || rcs[0] == 137)); then
        why="timed out after ${timeout}s (EVS_VM_TIMEOUT / --timeout)"
    elif [[ -n $panic ]]; then
        why="guest kernel panic: ${panic#*Kernel panic - }"
    elif ((rcs[0] != 0)); then
        why="qemu failed with status ${rcs[0]}: $(head -n1 "$EVS_TMP/qemu.err")"
    else
        why="the guest stopped without reporting the script's exit status"
    fi
    printf 'evs-vm: error: %s\n' "$why" >&2
    if [[ ${EVS_VM_VERBOSE:-0} != 1 ]]; then
        tail -n 40 "$log" | sed 's/^/evs-vm: console: /' >&2
    fi
    sed 's/^/evs-vm: qemu: /' "$EVS_TMP/qemu.err" >&2
    sed 's/^/evs-vm: ctl: /' "$EVS_TMP/ctl.log" >&2
    exit "$EVS_VM_EXIT_HARNESS"
}
