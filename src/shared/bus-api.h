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
 * GetStatus() -> (s version, s state_dir, s default_backend, as backends, u volumes, u attached)
 *
 * IMAGE  = (sssssssstst) id, name, path, key id, key alias, key state, backend, cipher, size (bytes),
 *                        source, created (usec)
 * ImportImage(s file, s name, s key_ref) -> IMAGE   ListImages() -> a IMAGE   GetImage(s id_or_name) -> IMAGE
 * DeleteImage(s id_or_name) -> IMAGE (as it was; its CMK is left alone)
 * RewrapImage(s id_or_name, s key_ref) -> IMAGE   (as RewrapVolume, on the image file) */

#define EVS_BUS_OBJECT "/org/evs/Cryptd1"
#define EVS_BUS_INTERFACE "org.evs.Cryptd1.Manager"

#define EVS_KEY_SIG "(ssssstt)"
#define EVS_VOLUME_SIG "(ssssssssss)"
#define EVS_STATUS_SIG "(sssasuu)"
#define EVS_IMAGE_SIG "(sssssssstst)"
