# shellcheck shell=bash
# Stock Debian kernel for the guest: resolve, download, unpack, cache.
# Sourced by tests/vm/evs-vm.
#
# Cache layout (EVS_VM_CACHE, default /var/cache/evs-cryptd-vm):
#   kernels/<kver>/boot/vmlinuz-<kver>
#   kernels/<kver>/boot/vmlinux-<kver>      (uncompressed, booted via PVH;
#                                            boot/.no-pvh if impossible)
#   kernels/<kver>/lib/modules/<kver>/...   (all modules, depmod'ed)
#   kernels/<kver>/package                  ("<package> <version>")
#   kernels/<kver>/.complete                (written last: the entry is whole)
#   resolved                                ("<apt lists mtime> <kver>")
# Never installed on the host: `apt-get download` + `dpkg-deb -x` only.

# Newest fully unpacked kernel in the cache, or nothing.
evs_kernel_newest_cached() {
    local d best=
    for d in "$EVS_VM_CACHE"/kernels/*/.complete; do
        [[ -e $d ]] || continue
        d=${d%/.complete}
        best+="${d##*/}"$'\n'
    done
    [[ -n $best ]] && printf '%s' "$best" | sort -V | tail -n1
    return 0
}

# ABI name the metapackage points at ("6.1.0-56-amd64"), from apt's lists.
# apt-cache takes over a second here (no pkgcache.bin in container images),
# so the answer is remembered in $EVS_VM_CACHE/resolved together with the
# mtime of apt's lists directory, which `apt-get update` changes.
evs_kernel_from_apt() {
    local stamp kver memo_stamp memo=$EVS_VM_CACHE/resolved
    stamp=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo none)
    if [[ -r $memo ]] && read -r memo_stamp kver <"$memo" \
        && [[ $memo_stamp == "$stamp" && -n $kver ]]; then
        printf '%s\n' "$kver"
        return 0
    fi
    kver=$(apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: linux-image-\([0-9][^ ]*\)$/\1/p' | head -n1)
    if [[ -n $kver ]]; then
        printf '%s %s\n' "$stamp" "$kver" >"$memo.$$" && mv "$memo.$$" "$memo"
        printf '%s\n' "$kver"
    fi
}

# Sets EVS_KVER.  EVS_VM_KERNEL_VERSION pins a version.  Without apt lists
# (fresh machine) a cached kernel is used if there is one, else the lists are
# updated.
evs_kernel_resolve() {
    EVS_KVER=${EVS_VM_KERNEL_VERSION:-}
    [[ -n $EVS_KVER ]] && return 0
    EVS_KVER=$(evs_kernel_from_apt)
    [[ -n $EVS_KVER ]] && return 0
    EVS_KVER=$(evs_kernel_newest_cached)
    [[ -n $EVS_KVER ]] && return 0
    evs_apt_update
    EVS_KVER=$(evs_kernel_from_apt)
    [[ -n $EVS_KVER ]] || evs_die "cannot resolve linux-image-amd64 with apt-cache depends"
}

evs_kernel_dir() { printf '%s/kernels/%s' "$EVS_VM_CACHE" "$1"; }

# Download and unpack EVS_KVER unless cached.  Call with the cache lock held.
evs_kernel_fetch() {
    local kdir tmp deb pkg
    kdir=$(evs_kernel_dir "$EVS_KVER")
    if [[ -e $kdir/.complete ]]; then
        # Entries made before the PVH extraction existed.
        [[ -e $kdir/boot/vmlinux-$EVS_KVER || -e $kdir/boot/.no-pvh ]] \
            || evs_kernel_extract_pvh "$kdir/boot" "$EVS_KVER"
        return 0
    fi

    pkg=linux-image-$EVS_KVER
    mkdir -p "$EVS_VM_CACHE/kernels"
    # We hold the lock: any .tmp.* left is from a run that died mid-fetch.
    rm -rf "$EVS_VM_CACHE"/kernels/.tmp.*
    tmp=$(mktemp -d "$EVS_VM_CACHE/kernels/.tmp.XXXXXX")

    evs_log "fetching kernel package $pkg (once; cached in $EVS_VM_CACHE)"
    # Sandbox user root: apt's _apt user could not write into our 0700 tmp.
    if ! (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2); then
        # Stale lists (the ABI moved on, or the archive dropped that build).
        evs_apt_update
        if [[ -z ${EVS_VM_KERNEL_VERSION:-} ]]; then
            EVS_KVER=$(evs_kernel_from_apt)
            [[ -n $EVS_KVER ]] || evs_die "cannot resolve linux-image-amd64 after apt-get update"
            pkg=linux-image-$EVS_KVER
            kdir=$(evs_kernel_dir "$EVS_KVER")
            if [[ -e $kdir/.complete ]]; then
                rm -rf "$tmp"
                return 0
            fi
        fi
        (cd "$tmp" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >&2) \
            || evs_die "apt-get download $pkg failed"
    fi
    deb=$(find "$tmp" -maxdepth 1 -name "${pkg}_*.deb" | head -n1)
    [[ -n $deb ]] || evs_die "apt-get download $pkg produced no .deb"

    dpkg-deb -x "$deb" "$tmp/root" || evs_die "dpkg-deb -x $deb failed"
    # Newer Debian ships modules in usr/lib/modules; depmod -b wants lib/modules.
    if [[ ! -d $tmp/root/lib/modules/$EVS_KVER && -d $tmp/root/usr/lib/modules/$EVS_KVER ]]; then
        mkdir -p "$tmp/root/lib/modules"
        mv "$tmp/root/usr/lib/modules/$EVS_KVER" "$tmp/root/lib/modules/"
    fi
    [[ -f $tmp/root/boot/vmlinuz-$EVS_KVER ]] || evs_die "$pkg has no boot/vmlinuz-$EVS_KVER"
    [[ -d $tmp/root/lib/modules/$EVS_KVER ]] || evs_die "$pkg has no modules for $EVS_KVER"
    depmod -b "$tmp/root" "$EVS_KVER" || evs_die "depmod -b failed for $EVS_KVER"
    dpkg-deb -f "$deb" Package Version | awk '{printf "%s ", $2} END {print ""}' \
        >"$tmp/root/package"
    evs_kernel_extract_pvh "$tmp/root/boot" "$EVS_KVER"
    touch "$tmp/root/.complete"

    rm -rf "$kdir" # leftovers of an interrupted older layout
    mv "$tmp/root" "$kdir"
    rm -rf "$tmp"
    evs_log "kernel $EVS_KVER cached in $kdir"
}

# The bzImage decompresses itself (xz) in the guest, which under TCG takes
# ~5 s of every boot.  qemu can boot the uncompressed ELF vmlinux directly
# when it has a PVH entry note, so extract it once into boot/vmlinux-<kver>
# (as scripts/extract-vmlinux does).  Leaves nothing when it cannot: the
# caller then boots the bzImage.
evs_kernel_extract_pvh() {
    local boot=$1 kver=$2 magic tool off
    local bz=$boot/vmlinuz-$kver out=$boot/vmlinux-$kver
    # ELF note: namesz 4, descsz 8, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen".
    local pvh_note='\x04\x00\x00\x00\x08\x00\x00\x00\x12\x00\x00\x00Xen\x00'
    for magic in 'xz:\xfd7zXZ\x00' 'zstd:\x28\xb5\x2f\xfd' 'gzip:\x1f\x8b\x08'; do
        tool=${magic%%:*}
        command -v "$tool" >/dev/null || continue
        for off in $(LC_ALL=C grep -obUaP "${magic#*:}" "$bz" | head -n3 | cut -d: -f1); do
            # Trailing data after the stream makes the tool fail: ignore its
            # status and judge the output.
            tail -c "+$((off + 1))" "$bz" | "$tool" -dcq >"$out.tmp" 2>/dev/null || true
            if [[ $(head -c4 "$out.tmp" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]] \
                && LC_ALL=C grep -qaP "$pvh_note" "$out.tmp"; then
                mv "$out.tmp" "$out"
                return 0
            fi
        done
    done
    rm -f "$out.tmp"
    touch "$boot/.no-pvh"
    evs_log "note: no PVH-bootable vmlinux in $bz; booting the bzImage (slower)"
}

# Sets EVS_KERNEL to what qemu should boot for EVS_KVER.
# shellcheck disable=SC2034  # used by the caller
evs_kernel_image() {
    local boot
    boot=$(evs_kernel_dir "$EVS_KVER")/boot
    if [[ -f $boot/vmlinux-$EVS_KVER ]]; then
        EVS_KERNEL=$boot/vmlinux-$EVS_KVER
    else
        EVS_KERNEL=$boot/vmlinuz-$EVS_KVER
    fi
}
