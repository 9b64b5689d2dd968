/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "peer-watch.h"

/* One mask for every directory: the kernel keeps one watch per inode, and a directory may be
 * one port's socket directory and another's missing parent at once. */
#define WATCH_MASK (IN_CREATE | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

struct PeerWatch {
        PeerWatcher *watcher;
        PeerWatch *prev, *next;
        char *path;             /* the socket */
        char *dir;              /* its directory */
        char *watched;          /* the directory watched now: dir, or its nearest existing parent */
        char awaited[NAME_MAX + 1];     /* the name in `watched` that matters: the socket's or the next directory's */
        int wd;                 /* -1: disarmed */
        bool fire, rearm;       /* collected while reading events, acted on after */
        unsigned retries_left;
        sd_event_source *retry_timer;
        peer_watch_handler_t handler;
        void *userdata;
};

struct PeerWatcher {
        sd_event *event;
        int fd;                 /* inotify; -1 until a watch is first armed */
        sd_event_source *source;
        PeerWatch *watches;
        int init_error;         /* inotify_init1 failed once: do not try on every arm */
};

int peer_watcher_new(sd_event *event, PeerWatcher **ret) {
        PeerWatcher *pw = calloc(1, sizeof(PeerWatcher));
        if (!pw)
                return -ENOMEM;
        pw->event = sd_event_ref(event);
        pw->fd = -1;
        *ret = pw;
        return 0;
}

PeerWatcher *peer_watcher_free(PeerWatcher *pw) {
        if (!pw)
                return NULL;
        /* the ports free their watches first; whatever is left is detached */
        for (PeerWatch *w = pw->watches; w; w = w->next)
                w->watcher = NULL;
        sd_event_source_disable_unref(pw->source);
        safe_close(pw->fd);
        sd_event_unref(pw->event);
        free(pw);
        return NULL;
}

static bool wd_shared(const PeerWatch *w) {
        for (const PeerWatch *o = w->watcher->watches; o; o = o->next)
                if (o != w && o->wd == w->wd)
                        return true;
        return false;
}

static void unwatch(PeerWatch *w) {
        if (w->wd >= 0 && w->watcher && w->watcher->fd >= 0 && !wd_shared(w))
                (void) inotify_rm_watch(w->watcher->fd, w->wd);
        w->wd = -1;
        free(w->watched);
        w->watched = NULL;
        w->awaited[0] = 0;
}

/* 1: there, 0: not there. A dangling symlink is an error: its target may appear anywhere,
 * which this watch does not see, so the caller keeps its timer. */
static int socket_exists(const char *path) {
        struct stat st;
        if (stat(path, &st) == 0)
                return 1;
        if (lstat(path, &st) == 0)
                return -ENOLINK;
        return 0;
}

/* The component of w->path right below `parent` (a prefix of it, "" for "."). */
static void component_below(const PeerWatch *w, const char *parent, char *buf, size_t size) {
        const char *rest = w->path + strlen(parent);
        while (*rest == '/')
                rest++;
        size_t n = MIN(strcspn(rest, "/"), size - 1);
        memcpy(buf, rest, n);
        buf[n] = 0;
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata);

static int watcher_open(PeerWatcher *pw) {
        int r;

        if (pw->fd >= 0)
                return 0;
        if (pw->init_error)
                return pw->init_error;
        pw->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (pw->fd < 0)
                return (pw->init_error = -errno);
        r = sd_event_add_io(pw->event, &pw->source, pw->fd, EPOLLIN, on_inotify, pw);
        if (r < 0) {
                pw->fd = safe_close(pw->fd);
                return r;
        }
        return 0;
}

int peer_watch_new(PeerWatcher *pw, const char *path, peer_watch_handler_t handler, void *userdata,
                   PeerWatch **ret) {
        _cleanup_(peer_watch_freep) PeerWatch *w = calloc(1, sizeof(PeerWatch));

        if (!w)
                return -ENOMEM;
        w->wd = -1;
        w->path = strdup(path);
        if (!w->path)
                return -ENOMEM;
        const char *slash = strrchr(path, '/');
        w->dir = !slash ? strdup(".") : slash == path ? strdup("/") : strndup(path, slash - path);
        if (!w->dir)
                return -ENOMEM;
        w->handler = handler;
        w->userdata = userdata;
        w->watcher = pw;
        w->next = pw->watches;
        if (pw->watches)
                pw->watches->prev = w;
        pw->watches = w;
        *ret = TAKE_PTR(w);
        return 0;
}

PeerWatch *peer_watch_free(PeerWatch *w) {
        if (!w)
                return NULL;
        unwatch(w);
        if (w->watcher) {
                if (w->prev)
                        w->prev->next = w->next;
                else if (w->watcher->watches == w)
                        w->watcher->watches = w->next;
                if (w->next)
                        w->next->prev = w->prev;
        }
        sd_event_source_disable_unref(w->retry_timer);
        free(w->path);
        free(w->dir);
        free(w);
        return NULL;
}

int peer_watch_arm(PeerWatch *w) {
        int r;

        if (!w->watcher)
                return -ENODEV;
        if (w->wd >= 0 && !w->rearm)
                return socket_exists(w->path);
        r = watcher_open(w->watcher);
        if (r < 0)
                return r;
        unwatch(w);

        /* The socket's directory, or the nearest parent that exists. */
        _cleanup_(freep) char *d = strdup(w->dir);
        if (!d)
                return -ENOMEM;
        for (;;) {
                int wd = inotify_add_watch(w->watcher->fd, d, WATCH_MASK);
                if (wd >= 0) {
                        w->wd = wd;
                        break;
                }
                if ((errno != ENOENT && errno != ENOTDIR) || strcmp(d, "/") == 0 || strcmp(d, ".") == 0)
                        return -errno;
                char *slash = strrchr(d, '/');
                if (!slash)
                        strcpy(d, ".");
                else if (slash == d)
                        d[1] = 0;
                else
                        *slash = 0;
        }
        w->rearm = false;
        w->watched = TAKE_PTR(d);
        component_below(w, strcmp(w->watched, ".") == 0 ? "" : w->watched, w->awaited, sizeof(w->awaited));
        /* it may have appeared before the watch was in place */
        return socket_exists(w->path);
}

void peer_watch_disarm(PeerWatch *w) {
        if (!w)
                return;
        unwatch(w);
        w->fire = w->rearm = false;
        w->retries_left = 0;
        if (w->retry_timer)
                (void) sd_event_source_set_enabled(w->retry_timer, SD_EVENT_OFF);
}

bool peer_watch_armed(const PeerWatch *w) {
        return w && w->wd >= 0;
}

static int on_retry(sd_event_source *s, uint64_t usec, void *userdata) {
        PeerWatch *w = userdata;
        w->handler(w, w->userdata);
        return 0;
}

bool peer_watch_retry(PeerWatch *w) {
        if (!w || w->retries_left == 0)
                return false;
        w->retries_left--;
        if (w->retry_timer) {
                if (sd_event_source_set_time_relative(w->retry_timer, PEER_WATCH_RETRY_USEC) < 0 ||
                    sd_event_source_set_enabled(w->retry_timer, SD_EVENT_ONESHOT) < 0)
                        return false;
                return true;
        }
        /* accuracy 1 µs: sd-event reads 0 as its default of 250 ms, which this burst is here to avoid */
        return sd_event_add_time_relative(w->watcher->event, &w->retry_timer, CLOCK_MONOTONIC,
                                          PEER_WATCH_RETRY_USEC, 1, on_retry, w) >= 0;
}

static void watch_event(PeerWatcher *pw, const struct inotify_event *ev) {
        for (PeerWatch *w = pw->watches; w; w = w->next) {
                if (w->wd < 0)
                        continue;
                if (ev->mask & IN_Q_OVERFLOW) {
                        /* events were lost: look again at everything */
                        w->rearm = true;
                        continue;
                }
                if (w->wd != ev->wd)
                        continue;
                if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) {
                        if (ev->mask & IN_IGNORED)
                                w->wd = -1;     /* the kernel dropped it already */
                        w->rearm = true;
                } else if (ev->len > 0 && strcmp(ev->name, w->awaited) == 0) {
                        if (strcmp(w->watched, w->dir) == 0)
                                w->fire = true;
                        else
                                w->rearm = true;        /* one more level of the path exists */
                }
        }
}

static int on_inotify(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        PeerWatcher *pw = userdata;
        union {
                struct inotify_event ev;
                char buf[4096];
        } u;

        for (;;) {
                ssize_t n = read(fd, u.buf, sizeof(u.buf));
                if (n <= 0)
                        break;
                for (char *p = u.buf; p < u.buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *) p;
                        watch_event(pw, ev);
                        p += sizeof(*ev) + ev->len;
                }
        }

        /* Rearm and fire after all events are read; a handler may arm, disarm or free its
         * own watch, so the list is walked again from the head after each call. */
        for (PeerWatch *w = pw->watches; w; w = w->next)
                if (w->rearm) {
                        int r = peer_watch_arm(w);
                        if (r > 0)
                                w->fire = true;
                        else if (r < 0)
                                /* cannot watch any more: the port's timer carries on */
                                w->fire = true;
                }
        for (bool again = true; again;) {
                again = false;
                for (PeerWatch *w = pw->watches; w; w = w->next)
                        if (w->fire) {
                                w->fire = false;
                                w->retries_left = PEER_WATCH_RETRIES;
                                w->handler(w, w->userdata);
                                again = true;
                                break;
                        }
        }
        return 0;
}
