/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/* The D-Bus methods of org.evs.Cryptd1.Manager, one file per group (bus-keys.c, bus-volumes.c,
 * bus-images.c, bus-servers.c (servers and AS configurations)); bus-server.c holds the vtable and the connections. */

#include <systemd/sd-bus.h>

/* Refuses callers that are not root, with org.evs.Cryptd1.Error.AccessDenied. */
int bus_check_root(sd_bus_message *msg, sd_bus_error *error);

/* Replies to @msg with an array of signature @sig: @n items of @size bytes at @items, each appended by
 * @append. */
/* Replies to @msg with one item appended by @append. From a job or the loop. */
int bus_reply(sd_bus_message *msg, int (*append)(sd_bus_message *reply, const void *item), const void *item);
int bus_reply_array(sd_bus_message *msg, const char *sig, const void *items, size_t n, size_t size,
                    int (*append)(sd_bus_message *reply, const void *item));

int method_list_keys(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_disable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_enable_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_schedule_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_cancel_key_deletion(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_rotate_key(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_set_key_rotation(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_key_rotation(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_volume_key_version(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_volume_key_versions(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_volume_created(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_volumes_created(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_unreadable_records(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_attach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_detach_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_rewrap_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_repair_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error); /* volume-repair.c */
int method_get_volume_details(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_volume_details(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_check_volume(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_check_all_volumes(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_add_recovery_passphrase(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_remove_recovery_passphrase(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_import_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_rewrap_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_delete_image(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_images(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_image_from_server(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_server(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_server(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_delete_server(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_delete_server_ex(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_servers(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_create_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_delete_as_config(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_list_as_configs(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_status(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_backends(sd_bus_message *msg, void *userdata, sd_bus_error *error);
int method_get_metrics(sd_bus_message *msg, void *userdata, sd_bus_error *error);
