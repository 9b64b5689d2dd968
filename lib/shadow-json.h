/* SPDX-License-Identifier: MIT */
#pragma once

/* The shadow as JSON, so that a restarting daemon can pick it up (systemd's fd store): fds
 * are referred to by their index in an array that travels beside the JSON. */

#include <json-c/json.h>

#include "shadow.h"

#define SHADOW_MAX_SAVED_FDS (GUEST_MEMORY_MAX_SLOTS + 3 * VU_MAX_VRINGS + 4)

/* *ret: the JSON; fds[0..*ret_n_fds) the shadow's own fds it refers to (still the shadow's). */
int shadow_to_json(const Shadow *s, json_object **ret, int *fds, size_t *ret_n_fds);
/* Rebuilds a shadow (initialized, empty) from JSON and fds (duplicated; the caller keeps
 * its own). On error the shadow is left empty. */
int shadow_from_json(Shadow *s, json_object *j, const int *fds, size_t n_fds, const char **ret_reason);
