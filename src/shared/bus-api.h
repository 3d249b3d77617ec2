/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The D-Bus API of evs-cryptd, shared by the daemon and evsctl. Served peer-to-peer on
 * BusPath= (default /run/evs-cryptd/bus); root callers only.
 *
 * KEY    = (ssssstt)  backend, id, alias, description, state, created (usec), deletion date (usec, 0 = none)
 * VOLUME = (ssssssssss) id, device, mapping, state ("attached", "detached"), key id, key alias, key state,
 *                       backend, warning, last error     ("" where there is nothing)
 *
 * ListKeys() -> a KEY            GetKey(s ref) -> KEY            CreateKey(s alias, s description, s backend) -> KEY
 * DisableKey(s ref) -> KEY       EnableKey(s ref) -> KEY
 * ScheduleKeyDeletion(s ref, u days) -> KEY                       CancelKeyDeletion(s ref) -> KEY
 * CreateVolume(s device, s volume_id, s key_ref, b force) -> VOLUME
 * AttachVolume(s volume_id_or_device) -> VOLUME, b already_attached
 * DetachVolume(s volume_id, b force) -> b was_attached, b deferred
 * ListVolumes() -> a VOLUME      GetVolume(s volume_id_or_device) -> VOLUME
 * RewrapVolume(s volume_id_or_device, s key_ref) -> VOLUME   (the data key re-wrapped under key_ref, crash-safe)
 * RepairVolume(s volume_id_or_device) -> VOLUME, b repaired   (a damaged LUKS2 header copy rewritten from the
 *                       intact one; every other method refuses a damaged header and never writes to it)
 * RotateKey(s ref) -> KEY   (a new material version now)   SetKeyRotation(s ref, u days) -> KEY (30..365, 0 = off)
 * KEY_ROTATION = (uutt) current version, rotation period in days (0 = off), next rotation (usec, 0 = none),
 *                       last rotation (usec, 0 = never); zeros where the backend does not know
 * GetKeyRotation(s ref) -> KEY_ROTATION
 * VOLUME_KEY_VERSION = (suu) volume id, CMK version its data key is wrapped with, the CMK's newest version
 *                      (0 = unknown)
 * GetVolumeKeyVersion(s volume_id_or_device) -> VOLUME_KEY_VERSION   ListVolumeKeyVersions() -> a VOLUME_KEY_VERSION
 *                      (the volumes of ListVolumes(), in its order)
 * VOLUME_EX = (ssssssssss u i s) VOLUME, then: keyslots not bound to an evs-kms or evs-recovery token,
 *                       the recovery passphrase's keyslot (-1 = none), attached by ("" = evs-cryptd as evs-ID,
 *                       "systemd-cryptsetup", or the mapping name of another tool)
 * GetVolumeDetails(s volume_id_or_device) -> VOLUME_EX        ListVolumeDetails() -> a VOLUME_EX
 * VOLUME_CREATED = (st) volume id, when it was created (usec; by volume create, or when this host first recorded a
 *                       volume made elsewhere; 0 = unknown: recorded by a version before this, or no record)
 * GetVolumeCreated(s volume_id_or_device) -> VOLUME_CREATED   ListVolumesCreated() -> a VOLUME_CREATED
 *                      (every volume record, by id, from the records alone: no header read, no KMS call; a
 *                      volume without a record is not in it)
 * CHECK  = (ssssssssss u i s s s) VOLUME_EX, then the error an attach would answer now (its name, "" when it
 *                       would attach) and its message; state "attached" when a mapping is open, key state
 *                       "" unless the KMS answered. Nothing is opened or recorded; one KMS call (the unwrap).
 * CheckVolume(s volume_id_or_device) -> CHECK                  CheckAllVolumes() -> a CHECK
 * AddRecoveryPassphrase(s volume_id_or_device, ay passphrase) -> i keyslot   (sensitive; wiped after use)
 * RemoveRecoveryPassphrase(s volume_id_or_device) -> i keyslot (the one removed)
 * DetachVolume refuses (KeyDisabled, KeyPendingDeletion, KeyDestroyed, KmsUnavailable) a volume that could not
 *                       be attached again, after one describe of its CMK, unless force (then no KMS call).
 * GetStatus() -> (s version, s state_dir, s default_backend, as backends, u volumes, u attached)
 *
 * IMAGE  = (sssssssstst) id, name, path, key id, key alias, key state, backend, cipher, size (bytes),
 *                        source, created (usec)
 * ImportImage(s file, s name, s key_ref) -> IMAGE   ListImages() -> a IMAGE   GetImage(s id_or_name) -> IMAGE
 * DeleteImage(s id_or_name) -> IMAGE (as it was; its CMK is left alone)
 * RewrapImage(s id_or_name, s key_ref) -> IMAGE   (as RewrapVolume, on the image file)
 * CreateImageFromServer(s server, s name) -> IMAGE (from the server's system disk, same CMK and cipher)
 *
 * DISK   = (ssssssssb) volume id, device, key id, key alias, key state, backend, cipher, mapping, plain
 * SERVER = (ssssss DISK a DISK t) name, image id, image name, AS configuration, state ("attached",
 *                        "detached", "partially-attached"), warning, system disk, data disks, created (usec)
 * CreateServer(s name, s image, s as_config, s system_disk, as data_disks, b force) -> SERVER
 *         (exactly one of image and as_config; data disks "DEVICE[:key=KEY|:plain]", bare with as_config)
 * ListServers() -> a SERVER   GetServer(s name) -> SERVER   DeleteServer(s name) -> SERVER (as it was, detached)
 * DeleteServerEx(s name, b force) -> SERVER   (DeleteServer is DeleteServerEx(name, false): every volume passes
 *         DetachVolume's guard first, or nothing is detached and the server is kept; force: no guard, no KMS call)
 *
 * AS_DISK   = (tsssssb) size (bytes of the source disk; a data disk launched must have as many), key id, key alias, key
 * state, backend, cipher, plain AS_CONFIG = (ssss AS_DISK a AS_DISK t) name, image id, image name, source server,
 * system disk, data disks, created (usec) CreateAsConfig(s name, s server) -> AS_CONFIG   ListAsConfigs() -> a
 * AS_CONFIG   GetAsConfig(s name) -> AS_CONFIG DeleteAsConfig(s name) -> AS_CONFIG (as it was)
 *
 * A record file that does not load (garbage, not a regular file...) never makes its object vanish: ListVolumes
 * shows the volume with state "unknown", ListServers the server by name with state "unknown" and the reason as
 * its warning, ListImages the image by id (and path) with key state "unknown", ListAsConfigs the configuration
 * by name, the other fields empty; Get*, Delete* and the rest refuse it (StoreCorrupt), naming the file.
 * UNREADABLE_RECORD = (sss) kind ("volumes", "images", "servers", "as-configs"), id or name, reason ("record
 *                     PATH is unreadable: not a valid record")
 * ListUnreadableRecords() -> a UNREADABLE_RECORD   (nothing is changed on disk) */

#define EVS_BUS_OBJECT "/org/evs/Cryptd1"
#define EVS_BUS_INTERFACE "org.evs.Cryptd1.Manager"

#define EVS_KEY_SIG "(ssssstt)"
#define EVS_KEY_ROTATION_SIG "(uutt)"
#define EVS_VOLUME_KEY_VERSION_SIG "(suu)"
#define EVS_VOLUME_SIG "(ssssssssss)"
#define EVS_VOLUME_EX_SIG "(ssssssssssuis)"
#define EVS_VOLUME_CREATED_SIG "(st)"
#define EVS_CHECK_SIG "(ssssssssssuisss)"
#define EVS_STATUS_SIG "(sssasuu)"
/* GetBackends: name, type, calls in flight, calls queued, most in flight since start,
 * MaxConcurrentRequests= in force, RequestsPerSecond=, Timeout= in milliseconds. */
#define EVS_BACKEND_SIG "(ssuuuuuu)"
#define EVS_IMAGE_SIG "(sssssssstst)"
#define EVS_DISK_SIG "(ssssssssb)"
#define EVS_SERVER_SIG "(ssssss" EVS_DISK_SIG "a" EVS_DISK_SIG "t)"
#define EVS_AS_DISK_SIG "(tsssssb)"
#define EVS_UNREADABLE_RECORD_SIG "(sss)"
#define EVS_AS_CONFIG_SIG "(ssss" EVS_AS_DISK_SIG "a" EVS_AS_DISK_SIG "t)"
