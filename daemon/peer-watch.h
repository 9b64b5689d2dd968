/* SPDX-License-Identifier: MIT */
#pragma once

/* Client mode: tells a port the moment the socket path of the peer it connects to appears
 * (bind() creates the file), through one inotify fd of the manager. The directory of the
 * socket may not exist yet: the nearest existing parent is watched until it does. A peer
 * that binds before it listens gets a short, bounded burst of retries. Without inotify
 * (or past its limits) peer_watch_arm() fails and the port keeps its backoff timer. */

#include <stdbool.h>
#include <systemd/sd-event.h>

#include "macro.h"

typedef struct PeerWatcher PeerWatcher;
typedef struct PeerWatch PeerWatch;

/* Called when the socket may be connectable now: it appeared, or a quick retry is due. */
typedef void (*peer_watch_handler_t)(PeerWatch *w, void *userdata);

/* The bounded retry while a socket is bound but not yet listening: every 2 ms, 25 times. */
#define PEER_WATCH_RETRY_USEC 2000u
#define PEER_WATCH_RETRIES 25u

int peer_watcher_new(sd_event *event, PeerWatcher **ret);
PeerWatcher *peer_watcher_free(PeerWatcher *pw);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerWatcher *, peer_watcher_free);

/* A watch of path, disarmed; handler runs from the event loop. */
int peer_watch_new(PeerWatcher *pw, const char *path, peer_watch_handler_t handler, void *userdata,
                   PeerWatch **ret);
PeerWatch *peer_watch_free(PeerWatch *w);
DEFINE_TRIVIAL_CLEANUP_FUNC(PeerWatch *, peer_watch_free);

/* Starts watching (idempotent). Returns 1 if the socket file exists already (so a connect is
 * worth trying now: it may have appeared before the watch), 0 if it does not, or a negative
 * errno if inotify cannot watch it (no inotify, out of instances or watches, no access, a
 * dangling symlink). */
int peer_watch_arm(PeerWatch *w);
/* Stops watching and cancels a pending retry (the port is connected). */
void peer_watch_disarm(PeerWatch *w);
bool peer_watch_armed(const PeerWatch *w);
/* After a refused connect following an appearance: schedules the next quick retry and returns
 * true, or false once the burst is spent (the caller falls back to its timer). */
bool peer_watch_retry(PeerWatch *w);
