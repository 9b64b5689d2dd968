/* SPDX-License-Identifier: MIT */
#pragma once

/* A stand-in for the part of systemd that vhost-recond's crash handling relies on, for fast
 * tests without a private systemd: a NOTIFY_SOCKET that keeps the fds sent with FDSTORE=1
 * (named by FDNAME, one copy per open file as systemd keeps them), drops them on
 * FDSTOREREMOVE=1, and, when the daemon dies, drops stored sockets whose peer hung up (as
 * systemd's FDPOLL does) and starts it again with the store as LISTEN_FDS/LISTEN_FDNAMES
 * (Restart=always, RestartSec=0). It runs in a thread of the test. */

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#define STANDIN_MAX_FDS 4096

typedef struct StandinFd {
        char name[256];
        int fd;
} StandinFd;

typedef struct Standin {
        pthread_t thread;
        pthread_mutex_t lock;
        int notify_fd;
        char notify_path[128];
        char conf[128], log[128], dir[128];
        const char *binary;
        StandinFd fds[STANDIN_MAX_FDS];
        size_t n_fds;
        pid_t pid;              /* the daemon now */
        unsigned starts;        /* times it was started */
        unsigned ready;         /* READY=1 received (once per start) */
        unsigned stores, removes;
        bool hold;              /* a dead daemon is not started again until released */
        bool stop;
} Standin;

/* Starts the daemon (with --config conf, stderr appended to log) and the thread. */
int standin_start(Standin *s, const char *dir, const char *conf, const char *log);
/* Kills the daemon with SIGTERM, waits for it, stops the thread, closes the store. */
void standin_stop(Standin *s);
/* Waits until the daemon's start number `start` said READY=1. */
bool standin_wait_ready(Standin *s, unsigned start, int timeout_ms);
/* The daemon's pid now (0 while it is being restarted). */
pid_t standin_pid(Standin *s);
/* Number of fds in the store now. */
size_t standin_count(Standin *s);
/* While held, a daemon that dies stays down (the store stays); released, it starts again. */
void standin_hold(Standin *s, bool hold);
/* Whether the store holds an fd whose name starts with prefix. */
bool standin_has(Standin *s, const char *prefix);
