/* SPDX-License-Identifier: MIT */
#pragma once

/* The Varlink wire format (varlink.org): JSON objects, each ended by a NUL byte.
 * Calls: {"method": "iface.Method", "parameters": {...}, "more": bool, "oneway": bool}.
 * Replies: {"parameters": {...}, "continues": bool} or {"error": "iface.Error", ...}.
 * Framing and (de)serialization only; no I/O. */

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* A growing buffer that JSON is written into directly, for replies too large to build as
 * json-c objects quickly (ListPorts of a thousand ports: 11 ms through json-c, 0.7 ms
 * through stdio, 0.2 ms here). Out of memory is remembered and reported by the steal. */
typedef struct JsonBuf {
        char *data;
        size_t len, allocated;
        bool oom;
} JsonBuf;

void json_buf_put(JsonBuf *b, const char *s, size_t n);
void json_buf_puts(JsonBuf *b, const char *s);          /* as it is: no quoting */
void json_buf_put_u64(JsonBuf *b, uint64_t v);
void json_buf_put_i64(JsonBuf *b, int64_t v);
void json_buf_put_string(JsonBuf *b, const char *s);    /* quoted and escaped */
/* The text, with a NUL after it that *ret_size counts (the Varlink terminator); NULL if
 * memory ran out. The buffer is empty afterwards. */
char *json_buf_steal(JsonBuf *b, size_t *ret_size);
void json_buf_done(JsonBuf *b);
char *varlink_error_new(const char *error, json_object *parameters, size_t *ret_size);
char *varlink_call_new(const char *method, json_object *parameters, bool more, size_t *ret_size);

/* Parses a reply: *ret_error is NULL for a good reply (the caller frees both). */
int varlink_reply_parse(const char *text, json_object **ret_parameters, char **ret_error, bool *ret_continues);
