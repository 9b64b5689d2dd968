/* SPDX-License-Identifier: MIT */
#pragma once

/* A raw Varlink client for tests: calls, replies, and whatever bytes a test wants to send. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "varlink.h"

typedef struct ControlClient {
        int fd;
        VarlinkBuffer in;
} ControlClient;

int control_client_open(ControlClient *c, const char *path);
void control_client_close(ControlClient *c);
int control_client_call(ControlClient *c, const char *method, json_object *params, bool more);
/* Next reply within timeout_ms. *ret_error: NULL or the error name (caller frees). */
int control_client_reply(ControlClient *c, int timeout_ms, json_object **ret_params, char **ret_error, bool *ret_continues);
/* One call, one reply; returns the parameters and asserts no error. */
json_object *control_call_ok(const char *path, const char *method, json_object *params);
/* One counter of one port, from GetPort (asserts the call succeeds). */
int64_t control_port_counter(const char *path, const char *port, const char *counter);
/* True when the daemon closed the connection within timeout_ms. */
bool control_client_closed(ControlClient *c, int timeout_ms);
