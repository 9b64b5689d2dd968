/* SPDX-License-Identifier: MIT */
#pragma once

/* A plain HTTP/1.1 client over loopback TCP for tests and benchmarks of the metrics endpoint. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then closed). */
uint16_t http_free_port(void);

/* A connection to 127.0.0.1:port, blocking; -errno on failure. */
int http_connect(uint16_t port);

typedef struct HttpAnswer {
        int status;             /* from the status line; 0 when none came (closed or timed out) */
        size_t bytes;           /* all that came, headers included */
        bool found;             /* `needle` was seen (within one read) */
        char head[512];         /* the first bytes of the answer, NUL-terminated */
} HttpAnswer;

/* Sends request (len bytes) on a new connection and reads until the server closes it or
 * timeout_ms pass without a byte. needle may be NULL. Returns 0, or -errno if it could not
 * connect or send. */
int http_exchange(uint16_t port, const char *request, size_t len, const char *needle, int timeout_ms,
                  HttpAnswer *ret);
