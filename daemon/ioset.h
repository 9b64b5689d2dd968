/* SPDX-License-Identifier: MIT */
#pragma once

/* The ports' sockets (listeners, connections, BACKEND_REQ channels) live in epoll sets of
 * their own, each one sd-event source, instead of one sd-event source per fd. sd-event
 * dispatches one source per loop iteration and re-reads every ready fd each time, so with
 * a thousand ports connecting at once its cost per dispatch grows with the number of ready
 * fds; here one iteration serves a batch of ready fds (at most IOSET_BATCH, each with its
 * own bounded work), and the kernel's ready list keeps them in round-robin order. The
 * control socket, timers and signals stay sd-event sources and get their turn between
 * batches.
 *
 * Two sets: normal, and boosted (served first: the replay handoff). */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#define IOSET_BATCH 32

typedef int (*io_handler_t)(sd_event_source *unused, int fd, uint32_t revents, void *userdata);

typedef struct IoSet IoSet;
typedef struct IoWatch IoWatch;

int ioset_new(sd_event *e, IoSet **ret);
/* Called after each batch (the manager's handoff check): no post source, so a dispatch
 * costs no extra loop iteration. */
void ioset_set_after_batch(IoSet *s, void (*cb)(void *userdata), void *userdata);
IoSet *ioset_free(IoSet *s);

int io_watch_add(IoSet *s, IoWatch **ret, int fd, uint32_t events, io_handler_t cb, void *userdata);
/* Safe from any handler, for any watch (also one later in the batch being served). */
IoWatch *io_watch_free(IoWatch *w);
int io_watch_set_events(IoWatch *w, uint32_t events);
int io_watch_set_enabled(IoWatch *w, bool enabled);
/* Moves the watch to the boosted set (served before anything else) or back. */
int io_watch_set_boost(IoWatch *w, bool boost);
