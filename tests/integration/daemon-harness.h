/* SPDX-License-Identifier: MIT */
#pragma once

/* Runs vhost-recond on a config of its own in a temporary directory, for tests and
 * benchmarks: ports port0..portN-1 at DIR/portK.sock and DIR/portK.vswitch.sock. */

#include <stdbool.h>
#include <sys/types.h>

typedef struct Daemon {
        pid_t pid;
        char dir[64];
        char conf[128];
        char log[128];
        size_t log_seen;        /* log_wait() looks past this offset */
} Daemon;

/* extra: text added at the top of the config (e.g. "reply_timeout_ms = 300;"). */
void daemon_start(Daemon *d, unsigned n_ports, const char *extra);
/* The same with each side's mode ("server" or "client") and reconnect_ms for every port. */
void daemon_start_modes(Daemon *d, unsigned n_ports, const char *extra, const char *frontend_mode,
                        const char *backend_mode, unsigned reconnect_ms);
/* The same with port_extra added to every port's settings (e.g. "allow_uids = [ 0 ];"). */
void daemon_start_full(Daemon *d, unsigned n_ports, const char *extra, const char *port_extra,
                       const char *frontend_mode, const char *backend_mode, unsigned reconnect_ms);
/* In two steps, for a config of the test's own: the directory and file names, then (after the
 * test wrote d->conf) the daemon started on it. */
void daemon_prepare(Daemon *d);
void daemon_exec(Daemon *d);
/* (Re)writes the daemon's config file, atomically (for a reload). */
void daemon_write_config(const Daemon *d, unsigned n_ports, const char *extra, const char *port_extra,
                         const char *frontend_mode, const char *backend_mode, unsigned reconnect_ms);
/* Stops with SIGTERM and returns the exit status (0 expected). */
int daemon_stop(Daemon *d);
void daemon_path(const Daemon *d, unsigned port, bool backend, char *buf, size_t size);
/* Waits until the log has `needle` past what earlier waits consumed. */
bool daemon_log_wait(Daemon *d, const char *needle, int timeout_ms);
char *daemon_log_read(const Daemon *d);
/* Number of open fds of the daemon process. */
int daemon_fd_count(const Daemon *d);
/* The daemon's voluntary + involuntary context switches so far (-1 if they cannot be read):
 * a daemon that sleeps in epoll adds none. */
long daemon_context_switches(const Daemon *d);
/* The daemon's VmRSS in KiB (-1 if it cannot be read). */
long daemon_rss_kib(const Daemon *d);
