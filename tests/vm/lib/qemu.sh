# shellcheck shell=bash
# Running the guest: qemu command line and the serial-console filter.
# Sourced by tests/vm/evs-vm.

# Read the serial console (stdin) and
#  - hide everything before "EVS-VM-START:<token>" (firmware and kernel boot
#    chatter; shown on stderr with EVS_VM_VERBOSE=1),
#  - print the test's output live on stdout,
#  - turn "EVS-VM-EXIT:<token>:<status>" into the file $2 (status only) and
#    hide it and whatever follows (the power-off),
#  - keep a full copy of the console in $3 for error reports.
# $1 is the token.  Runs in a pipeline subshell, hence the status file.
evs_console_filter() {
    local token=$1 status_file=$2 log=$3 state=booting line prefix
    local t0=${EPOCHREALTIME/[.,]/}
    local start="EVS-VM-START:$token" exit="EVS-VM-EXIT:$token:"
    # `|| [[ -n $line ]]`: a last line without newline (qemu killed).
    while IFS= read -r line || [[ -n $line ]]; do
        line=${line%$'\r'}
        printf '%s\n' "$line" >>"$log"
        case $state in
        booting)
            if [[ $line == *"$start"* ]]; then
                state=running
                evs_debug "script starts at +$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))ms"
            else
                # Host-side time since qemu started, to see where boot goes.
                evs_debug "boot +$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))ms: $line"
            fi
            ;;
        running)
            if [[ $line == *"$exit"* ]]; then
                # Output without a final newline ends up before the marker.
                prefix=${line%%"$exit"*}
                [[ -n $prefix ]] && printf '%s\n' "$prefix"
                line=${line#*"$exit"}
                printf '%s\n' "${line%%[!0-9]*}" >"$status_file"
                state=finished
                evs_debug "script ended at +$(((${EPOCHREALTIME/[.,]/} - t0) / 1000))ms"
            else
                printf '%s\n' "$line"
            fi
            ;;
        finished) ;;
        esac
    done
}

# Fill the array EVS_QEMU with the qemu command line.  Uses EVS_KERNEL,
# EVS_INITRD, EVS_DISK_ARGS[], EVS_TMP, EVS_SHELL.
# shellcheck disable=SC2034  # EVS_QEMU is used by the caller
evs_qemu_cmd() {
    local accel=(-accel tcg -cpu max)
    if [[ ${EVS_VM_KVM:-0} == 1 ]]; then
        accel=(-enable-kvm -cpu host)
    fi
    local serial=stdio
    # Interactive: Ctrl-A x quits, Ctrl-A c is the qemu monitor.
    [[ $EVS_SHELL == 1 ]] && serial=mon:stdio
    EVS_QEMU=(
        qemu-system-x86_64 "${accel[@]}"
        -m "${EVS_VM_MEM:-1024}" -smp "${EVS_VM_SMP:-1}"
        -nographic -nodefaults -serial "$serial" -no-reboot
        -pidfile "$EVS_TMP/qemu.pid"
        -kernel "$EVS_KERNEL" -initrd "$EVS_INITRD"
        -append "console=ttyS0 quiet panic=-1 ${EVS_VM_APPEND:-}"
        # Entropy for the guest's getrandom() (LUKS keys, salts) without
        # waiting for the jitter collector under emulation.
        -device virtio-rng-pci
        "${EVS_DISK_ARGS[@]}"
        "${EVS_NET_ARGS[@]}"
    )
}
