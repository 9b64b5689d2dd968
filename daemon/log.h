/* SPDX-License-Identifier: MIT */
#pragma once

/* Logging to stderr with <N> syslog priority prefixes, which journald understands. */

#include <errno.h>
#include <syslog.h>

#include "macro.h"

extern int log_max_level;
/* f(userdata) is called once before the next line is written (then forgotten): lines held
 * back for later (a back-end's connect, announced after its replay went out) are written
 * first, in order. log_cancel_before_write(f) forgets f if it is still set. */
void log_set_before_write(void (*f)(void *userdata), void *userdata);
void log_cancel_before_write(void (*f)(void *userdata));

_printf_(2, 3) void log_internal(int level, const char *fmt, ...);
_printf_(3, 4) int log_errno_internal(int level, int error, const char *fmt, ...);

#define log_debug(...)   do { if (log_max_level >= LOG_DEBUG) log_internal(LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_info(...)    log_internal(LOG_INFO, __VA_ARGS__)
#define log_notice(...)  log_internal(LOG_NOTICE, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_WARNING, __VA_ARGS__)
#define log_error(...)   log_internal(LOG_ERR, __VA_ARGS__)

/* Logs with %m meaning strerror(error), and returns -abs(error). */
#define log_error_errno(error, ...)   log_errno_internal(LOG_ERR, error, __VA_ARGS__)
#define log_warning_errno(error, ...) log_errno_internal(LOG_WARNING, error, __VA_ARGS__)
