/* SPDX-License-Identifier: MIT */
#pragma once

/* The control socket: Varlink (JSON objects ended by NUL) with org.varlink.service and
 * io.vhostrecon. Reading is open to whoever may connect (the socket's mode and group);
 * Disconnect and Reload need uid 0 or the admin group (SO_PEERCRED, SO_PEERGROUPS).
 * Requests and clients are bounded; a client that sends garbage or stalls is dropped. */

#include <json-c/json.h>
#include <sys/types.h>

typedef struct Manager Manager;
typedef struct ControlServer ControlServer;

#define CONTROL_MAX_CLIENTS     128
#define CONTROL_MAX_MESSAGE     (64u * 1024)
/* Ahead of the ports' sockets, boosted ones included: a request is bounded work, and a
 * storm must not hide the ports' state from whoever asks. Only members of control_group
 * can connect at all. */
#define CONTROL_PRIORITY        (SD_EVENT_PRIORITY_IMPORTANT - 1)
#define CONTROL_MAX_QUEUED      (4u * 1024 * 1024)
#define CONTROL_STALL_USEC      (5 * 1000000ull)

int control_server_new(Manager *m, const char *path, mode_t mode, const char *group, const char *admin_group,
                       ControlServer **ret);
ControlServer *control_server_free(ControlServer *s);
/* Puts the listening socket into systemd's fd store (a clean restart keeps it). */
void control_server_store(ControlServer *s);
/* Sends an event to every client that called Monitor. Does not take `event`. */
void control_server_broadcast(ControlServer *s, json_object *event);
