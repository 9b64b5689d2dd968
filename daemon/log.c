/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int log_max_level = LOG_INFO;
static void (*before_write)(void *userdata);
static void *before_write_userdata;

void log_set_before_write(void (*f)(void *userdata), void *userdata) {
        before_write = f;
        before_write_userdata = userdata;
}

void log_cancel_before_write(void (*f)(void *userdata)) {
        if (before_write == f)
                before_write = NULL;
}

static void log_write(int level, const char *fmt, va_list ap) {
        char buf[1024];
        if (before_write) {
                void (*f)(void *) = before_write;
                int saved = errno;      /* for %m */
                before_write = NULL;
                f(before_write_userdata);
                errno = saved;
        }
        vsnprintf(buf, sizeof(buf), fmt, ap);
        fprintf(stderr, "<%d>%s\n", level, buf);
}

void log_internal(int level, const char *fmt, ...) {
        va_list ap;
        if (level > log_max_level)
                return;
        va_start(ap, fmt);
        log_write(level, fmt, ap);
        va_end(ap);
}

int log_errno_internal(int level, int error, const char *fmt, ...) {
        va_list ap;
        error = abs(error);
        if (level <= log_max_level) {
                errno = error;          /* for %m */
                va_start(ap, fmt);
                log_write(level, fmt, ap);
                va_end(ap);
        }
        return -error;
}
