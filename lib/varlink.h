/* SPDX-License-Identifier: MIT */
#pragma once

/* The Varlink wire format (varlink.org): JSON objects, each ended by a NUL byte.
 * Calls: {"method": "iface.Method", "parameters": {...}, "more": bool, "oneway": bool}.
 * Replies: {"parameters": {...}, "continues": bool} or {"error": "iface.Error", ...}.
 * Framing and (de)serialization only; no I/O. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>

typedef struct VarlinkBuffer {
        char *data;
        size_t size, allocated;
        size_t max;             /* a message longer than this is refused */
} VarlinkBuffer;

void varlink_buffer_init(VarlinkBuffer *b, size_t max);
void varlink_buffer_done(VarlinkBuffer *b);
/* Appends received bytes; -E2BIG past twice the limit (call next() after each append). */
int varlink_buffer_append(VarlinkBuffer *b, const void *data, size_t size);
/* 1: the next whole message (NUL-terminated, the caller frees it) in *ret; 0: none yet;
 * -E2BIG: the message is longer than the limit. */
int varlink_buffer_next(VarlinkBuffer *b, char **ret);

typedef struct VarlinkCall {
        char *method;
        json_object *parameters;        /* always an object (empty when absent) */
        bool more, oneway;
} VarlinkCall;

int varlink_call_parse(const char *text, VarlinkCall *ret, const char **ret_reason);
void varlink_call_done(VarlinkCall *c);

/* Serialized messages with their NUL; *ret_size includes it. They take `parameters`. */
char *varlink_reply_new(json_object *parameters, bool continues, size_t *ret_size);
/* A JSON string (quoted and escaped) to f, for replies too large to build as json-c objects
 * quickly (ListPorts of a thousand ports: 2 ms written directly, 11 ms through json-c). */
void varlink_write_string(FILE *f, const char *s);
char *varlink_error_new(const char *error, json_object *parameters, size_t *ret_size);
char *varlink_call_new(const char *method, json_object *parameters, bool more, size_t *ret_size);

/* Parses a reply: *ret_error is NULL for a good reply (the caller frees both). */
int varlink_reply_parse(const char *text, json_object **ret_parameters, char **ret_error, bool *ret_continues);
