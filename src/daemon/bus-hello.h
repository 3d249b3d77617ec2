/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

/* Answers org.freedesktop.DBus.Hello, GetNameOwner, AddMatch... on a peer-to-peer connection of the
 * daemon, so that busctl and gdbus, which connect as bus clients, can talk to it (bus-hello.c). */
int bus_hello_register(sd_bus *bus, sd_event *event);
