# shellcheck shell=bash
# Guest initramfs for tests/vm/evs-vm.  Sourced.
#
# The initramfs is three concatenated cpio archives.  The kernel unpacks them
# in order into the same rootfs, a later file replacing an earlier one:
#   1. base  (cached, gzip): busybox and its applet links, the kernel modules
#      with their dependency closure (depmod'ed), /etc/evs-vm/modules.load.
#      Key: kernel version, module lists, busybox, this file.
#      $EVS_VM_CACHE/initramfs/base-<kver>-<key>.cpio.gz
#   2. tools (cached): the host's cryptsetup, dmsetup, blkid, ... with their
#      shared libraries, libcryptsetup's token plugins, libgcc_s.  Key: the
#      tools' paths, sizes and mtimes, dpkg's status file (any package
#      change), this file.  A manifest of the libraries it holds lets the run
#      archive skip them.
#      $EVS_VM_CACHE/initramfs/tools-<key>.cpio (+ .libs)
#   3. run (every run): /init, the project's binaries and their libraries,
#      its token plugins, conf, the test script, --file copies, the config.
# 2 and 3 are left uncompressed: gunzip under TCG costs more than copying.
# All use a merged-/usr layout (bin, sbin, usr/sbin -> usr/bin; lib ->
# usr/lib; lib64 -> usr/lib64), so a real host tool in /usr/bin replaces the
# busybox applet of the same name.

# Modules insmod'ed at boot, with their dependencies.  EVS_VM_MODULES
# (space-separated) adds more.
readonly EVS_VM_BOOT_MODULES=(
    virtio_pci virtio_blk virtio-rng
    dm-mod dm-crypt
    xts ecb af_alg algif_skcipher algif_hash cryptd crypto_simd aesni-intel
    loop
)
# Modules only shipped: the kernel loads them on demand through
# /sbin/modprobe (busybox, reading the depmod'ed tree), e.g. ext4 on
# `mount -t ext4`.  Loading ext4 at every boot would cost ~0.3 s under TCG.
# virtio_net: for `evs-vm run --forward` (a test reaching a KMS on the host's loopback).
readonly EVS_VM_ONDEMAND_MODULES=(ext4 crc32c_generic dm-integrity dm-verity virtio_net)

# Host tools always put in the guest (the harness installs their packages).
readonly EVS_VM_GUEST_TOOLS=(cryptsetup dmsetup blkid losetup dd sha256sum)
# Put in the guest when the host has them.
readonly EVS_VM_GUEST_OPTIONAL_TOOLS=(bash mke2fs mkfs.ext4 e2fsck dumpe2fs tune2fs wipefs lsblk)
# The project's executables, relative to the build dir; skipped when absent.
readonly EVS_VM_PROJECT_BINS=(src/daemon/evs-cryptd src/evsctl/evsctl)
# libcryptsetup dlopen()s its token plugins from here.
readonly EVS_VM_CRYPTSETUP_PLUGINS=/usr/lib/x86_64-linux-gnu/cryptsetup

# Cached archives unused for this long are deleted when a new one is built.
readonly EVS_VM_CACHE_MAX_AGE_MIN=$((7 * 24 * 60))

# Create the merged-/usr skeleton in $1.
evs_root_skeleton() {
    local root=$1
    mkdir -p "$root"/usr/bin "$root"/usr/lib/x86_64-linux-gnu "$root"/usr/lib64 \
        "$root"/dev "$root"/proc "$root"/sys "$root"/run "$root"/tmp \
        "$root"/root "$root"/var/lib "$root"/etc/evs-vm
    ln -sfn usr/bin "$root/bin"
    ln -sfn usr/bin "$root/sbin"
    ln -sfn bin "$root/usr/sbin"
    ln -sfn usr/lib "$root/lib"
    ln -sfn usr/lib64 "$root/lib64"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root/root"
}

# Write the content of directory $1 as a newc cpio archive to stdout.
evs_cpio() {
    (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0)
}

# Temp dir for building a cached archive (we hold the cache lock, so any
# leftover .tmp.* is from a run that died).
evs_cache_tmp() {
    mkdir -p "$EVS_VM_CACHE/initramfs"
    rm -rf "$EVS_VM_CACHE"/initramfs/.tmp.*
    mktemp -d "$EVS_VM_CACHE/initramfs/.tmp.XXXXXX"
}

# Delete cached archives ($1: glob under initramfs/) unused for a week.
# Each run touches the ones it uses.
evs_cache_prune() {
    find "$EVS_VM_CACHE/initramfs" -maxdepth 1 -name "$1" \
        -mmin +"$EVS_VM_CACHE_MAX_AGE_MIN" -delete 2>/dev/null || true
}

# Shared libraries already in the guest, by guest path.
declare -A EVS_LIBS_DONE=()

# Copy the shared libraries (ldd closure, dynamic loader included) of each
# ELF file $2... into root $1.  Libraries from the standard directories keep
# their path; others (e.g. a build tree's own libs, found through an rpath)
# go to /usr/lib/x86_64-linux-gnu, which the loader always searches.
evs_add_libs() {
    local root=$1 file line lib dest
    shift
    for file; do
        # ldd prints "not a dynamic executable" (exit 1) for static files.
        while IFS= read -r line; do
            case $line in
            *" => not found"*)
                evs_die "$file needs ${line%% =>*}, which ldd cannot find on the host" ;;
            *" => /"*) lib=${line#*=> } ;;
            /*) lib=$line ;;
            *) continue ;;
            esac
            lib=${lib%% (0x*}
            case $lib in
            /lib/* | /usr/lib/* | /lib64/* | /usr/lib64/*) dest=$lib ;;
            *) dest=/usr/lib/x86_64-linux-gnu/${lib##*/} ;;
            esac
            # /lib is /usr/lib in the guest: one key for both spellings.
            dest=/usr${dest#/usr}
            [[ -n ${EVS_LIBS_DONE[$dest]:-} ]] && continue
            EVS_LIBS_DONE[$dest]=1
            mkdir -p "$root${dest%/*}"
            cp -L "$lib" "$root$dest"
        done < <(LC_ALL=C ldd "$file" 2>/dev/null | sed 's/^[[:space:]]*//' || true)
    done
}

# Copy executable $2 to /usr/bin/<basename> in root $1, with its libraries.
evs_install_bin() {
    local root=$1 src=$2 name=${2##*/}
    rm -f "$root/usr/bin/$name"
    cp -L "$src" "$root/usr/bin/$name"
    chmod 0755 "$root/usr/bin/$name"
    evs_add_libs "$root" "$src"
}

# Copy token plugins $2... into root $1's plugin dir, with their libraries.
evs_install_plugins() {
    local root=$1 plugin
    shift
    (($#)) || return 0
    mkdir -p "$root$EVS_VM_CRYPTSETUP_PLUGINS"
    for plugin; do
        cp -L "$plugin" "$root$EVS_VM_CRYPTSETUP_PLUGINS/"
    done
    evs_add_libs "$root" "$@"
}

# Print the .ko files (paths relative to the kernel tree $1, version $2) of
# modules $3... and all their dependencies, each once, in load order.
# Built-in modules print nothing.
evs_module_closure() {
    local kroot=$1 kver=$2 mod out line
    shift 2
    declare -A seen=()
    for mod; do
        out=$(modprobe --show-depends -d "$kroot" -S "$kver" "$mod" 2>&1) \
            || evs_die "module $mod: $out"
        while read -r line; do
            line=${line#insmod }
            case $line in
            "$kroot"/*) ;;
            *) continue ;; # "builtin foo"
            esac
            line=${line%% *} # drop module parameters, if any
            line=${line#"$kroot"/}
            [[ -n ${seen[$line]:-} ]] && continue
            seen[$line]=1
            printf '%s\n' "$line"
        done <<<"$out"
    done
}

# Sets EVS_BASE_CPIO to the cached base archive for kernel $EVS_KVER,
# building it if needed.  Call with the cache lock held.
evs_base_archive() {
    local kroot busybox key mods tmp root ko
    kroot=$(evs_kernel_dir "$EVS_KVER")
    busybox=$(readlink -f "$(command -v busybox)")
    read -r -a mods <<<"${EVS_VM_BOOT_MODULES[*]} ${EVS_VM_MODULES:-}"
    key=$({
        printf '%s\n' "$EVS_KVER" "${mods[@]}" -- "${EVS_VM_ONDEMAND_MODULES[@]}"
        sha256sum "$busybox" "${BASH_SOURCE[0]}" | cut -c1-64
    } | evs_sha256 | cut -c1-16)
    EVS_BASE_CPIO=$EVS_VM_CACHE/initramfs/base-$EVS_KVER-$key.cpio.gz
    if [[ -s $EVS_BASE_CPIO ]]; then
        touch "$EVS_BASE_CPIO"
        return 0
    fi

    evs_log "building the base initramfs (cached as ${EVS_BASE_CPIO##*/})"
    tmp=$(evs_cache_tmp)
    root=$tmp/root
    evs_root_skeleton "$root"

    # busybox: static in busybox-static; a dynamic one just brings its libs.
    EVS_LIBS_DONE=()
    cp "$busybox" "$root/usr/bin/busybox"
    evs_add_libs "$root" "$busybox"
    local applet
    for applet in $("$busybox" --list); do
        [[ $applet == busybox || $applet == */* ]] && continue
        ln -s busybox "$root/usr/bin/$applet"
    done
    # The kernel opens /dev/console for PID 1 before /init mounts devtmpfs.
    mknod -m 0600 "$root/dev/console" c 5 1
    mknod -m 0666 "$root/dev/null" c 1 3

    # Modules: the closure, depmod'ed so `modprobe` also works in the guest.
    local kmods=lib/modules/$EVS_KVER
    mkdir -p "$root/$kmods"
    cp "$kroot/$kmods"/modules.order "$kroot/$kmods"/modules.builtin* "$root/$kmods/"
    local closure load
    closure=$(evs_module_closure "$kroot" "$EVS_KVER" "${mods[@]}") || exit
    mapfile -t load <<<"$closure"
    printf '/%s\n' "${load[@]}" >"$root/etc/evs-vm/modules.load"
    closure+=$'\n'$(evs_module_closure "$kroot" "$EVS_KVER" "${EVS_VM_ONDEMAND_MODULES[@]}") || exit
    while IFS= read -r ko; do
        [[ -e $root/$ko ]] && continue
        mkdir -p "$root/${ko%/*}"
        cp "$kroot/$ko" "$root/$ko"
    done <<<"$closure"
    depmod -b "$root" "$EVS_KVER" || evs_die "depmod failed on the initramfs tree"

    evs_cpio "$root" | gzip -6n >"$tmp/base.cpio.gz"
    mv "$tmp/base.cpio.gz" "$EVS_BASE_CPIO"
    rm -rf "$tmp"
    evs_cache_prune 'base-*.cpio.gz'
}

# Sets EVS_TOOLS_CPIO (and its library manifest EVS_TOOLS_CPIO.libs) to the
# cached archive of host tools, building it if needed.  Call with the cache
# lock held.
evs_tools_archive() {
    local tool path key tmp root f paths=() plugins=()
    for tool in "${EVS_VM_GUEST_TOOLS[@]}"; do
        path=$(command -v "$tool") || evs_die "host tool $tool not found"
        paths+=("$path")
    done
    for tool in "${EVS_VM_GUEST_OPTIONAL_TOOLS[@]}"; do
        if path=$(command -v "$tool"); then
            paths+=("$path")
        fi
    done
    for f in "$EVS_VM_CRYPTSETUP_PLUGINS"/libcryptsetup-token-*.so; do
        [[ -f $f ]] && plugins+=("$f")
    done
    key=$({
        stat -L -c '%n %s %Y' "${paths[@]}" "${plugins[@]}" /var/lib/dpkg/status 2>/dev/null || true
        sha256sum "${BASH_SOURCE[0]}"
    } | evs_sha256 | cut -c1-16)
    EVS_TOOLS_CPIO=$EVS_VM_CACHE/initramfs/tools-$key.cpio
    if [[ -s $EVS_TOOLS_CPIO && -f $EVS_TOOLS_CPIO.libs ]]; then
        touch "$EVS_TOOLS_CPIO" "$EVS_TOOLS_CPIO.libs"
        return 0
    fi

    evs_debug "building the host tools archive ${EVS_TOOLS_CPIO##*/}"
    tmp=$(evs_cache_tmp)
    root=$tmp/root
    evs_root_skeleton "$root"
    EVS_LIBS_DONE=()
    for path in "${paths[@]}"; do
        evs_install_bin "$root" "$path"
    done
    # dlopen()ed, so invisible to ldd: libcryptsetup's token plugins (with
    # their own libraries) and libgcc_s (glibc loads it for pthread_cancel
    # and pthread_exit).
    evs_install_plugins "$root" "${plugins[@]}"
    for f in /usr/lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libgcc_s.so.1; do
        if [[ -f $f ]]; then
            cp -L "$f" "$root/usr/lib/x86_64-linux-gnu/"
            EVS_LIBS_DONE[/usr/lib/x86_64-linux-gnu/libgcc_s.so.1]=1
            break
        fi
    done
    [[ -f /etc/mke2fs.conf ]] && cp /etc/mke2fs.conf "$root/etc/"

    evs_cpio "$root" >"$tmp/tools.cpio"
    printf '%s\n' "${!EVS_LIBS_DONE[@]}" | LC_ALL=C sort >"$tmp/tools.libs"
    mv "$tmp/tools.libs" "$EVS_TOOLS_CPIO.libs"
    mv "$tmp/tools.cpio" "$EVS_TOOLS_CPIO"
    rm -rf "$tmp"
    evs_cache_prune 'tools-*.cpio*'
}

# Quote $1 for a POSIX shell.
evs_shquote() {
    local s=${1//\'/\'\\\'\'}
    printf "'%s'" "$s"
}

# Build the per-run archive in $1 (staging dir, created) and write it to $2.
# Inputs (globals set by evs-vm): EVS_REPO, EVS_BUILD, EVS_SCRIPT,
# EVS_SCRIPT_ARGS[], EVS_FILES[] (HOST:GUEST), EVS_NDISKS, EVS_TOKEN,
# EVS_SHELL, EVS_TOOLS_CPIO.
evs_run_archive() {
    local root=$1 out=$2 f lib
    evs_root_skeleton "$root"
    install -m 0755 "$EVS_REPO/tests/vm/init.sh" "$root/init"

    # Libraries the tools archive already has.
    EVS_LIBS_DONE=()
    while IFS= read -r lib; do
        [[ -n $lib ]] && EVS_LIBS_DONE[$lib]=1
    done <"$EVS_TOOLS_CPIO.libs"

    for f in "${EVS_VM_PROJECT_BINS[@]}"; do
        if [[ -x $EVS_BUILD/$f ]]; then
            evs_install_bin "$root" "$EVS_BUILD/$f"
        else
            evs_debug "not in the build dir (skipped): $EVS_BUILD/$f"
        fi
    done
    for f in ${EVS_VM_EXTRA_BINS:-}; do
        [[ -f $f ]] || evs_die "EVS_VM_EXTRA_BINS: no such file: $f"
        evs_install_bin "$root" "$f"
    done
    # Token plugins the project builds (they shadow a host one of the same
    # name).
    local plugins=()
    if [[ -d $EVS_BUILD ]]; then
        while IFS= read -r f; do
            plugins+=("$f")
        done < <(find "$EVS_BUILD" -name 'libcryptsetup-token-*.so' -type f 2>/dev/null | LC_ALL=C sort)
    fi
    evs_install_plugins "$root" "${plugins[@]}"

    # /etc
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\ntty:x:5:\ndisk:x:6:\n' >"$root/etc/group"
    printf 'evs-vm\n' >"$root/etc/hostname"
    printf '127.0.0.1 localhost evs-vm\n::1 localhost\n' >"$root/etc/hosts"
    if [[ -d $EVS_REPO/conf ]]; then
        mkdir -p "$root/etc/evs-cryptd"
        cp -a "$EVS_REPO/conf/." "$root/etc/evs-cryptd/"
    fi

    # The test script and its arguments.
    local guest_script=''
    if [[ -n ${EVS_SCRIPT:-} ]]; then
        guest_script=/root/${EVS_SCRIPT##*/}
        install -m 0755 "$EVS_SCRIPT" "$root$guest_script"
    fi
    {
        printf 'set --'
        for f in "${EVS_SCRIPT_ARGS[@]}"; do
            printf ' %s' "$(evs_shquote "$f")"
        done
        printf '\n'
        # A sanitizer build's options, with the reports going to files that init.sh shows after the script.
        local v
        for v in ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS TSAN_OPTIONS; do
            [[ -n ${!v:-} ]] || continue
            printf 'export %s=%s\n' "$v" "$(evs_shquote "${!v}:log_path=/run/evs-sanitizer/${v%_OPTIONS}")"
        done
    } >"$root/etc/evs-vm/args"
    {
        printf 'EVS_VM_TOKEN=%s\n' "$EVS_TOKEN"
        printf 'EVS_VM_NDISKS=%s\n' "$EVS_NDISKS"
        printf 'EVS_VM_SCRIPT=%s\n' "$(evs_shquote "$guest_script")"
        printf 'EVS_VM_SHELL=%s\n' "$EVS_SHELL"
        printf 'EVS_VM_HOSTNAME=evs-vm\n'
    } >"$root/etc/evs-vm/config"

    # --file HOST:GUEST, last so they can override anything above.
    local spec host guest
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

    evs_cpio "$root" >"$out"
}
