/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

int log_max_level = LOG_INFO;
void (*log_before_write)(void);

static void log_write(int level, const char *fmt, va_list ap) {
        char buf[1024];
        if (log_before_write) {
                void (*f)(void) = log_before_write;
                int saved = errno;      /* for %m */
                log_before_write = NULL;
                f();
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
