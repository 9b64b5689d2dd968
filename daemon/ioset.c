/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "ioset.h"
#include "macro.h"

struct IoWatch {
        IoSet *set;
        int fd;
        uint32_t events;
        io_handler_t cb;
        void *userdata;
        bool boosted;
        bool enabled;
        bool dead;              /* freed during a batch: released at its end */
        IoWatch *next_dead;
};

struct IoSet {
        int epfd[2];                    /* 0: normal, 1: boosted */
        sd_event_source *source[2];
        unsigned dispatching;           /* a batch is being served */
        IoWatch *dead;
        void (*after_batch)(void *userdata);
        void *after_batch_userdata;
};

void ioset_set_after_batch(IoSet *s, void (*cb)(void *userdata), void *userdata) {
        s->after_batch = cb;
        s->after_batch_userdata = userdata;
}

static void release_dead(IoSet *s) {
        while (s->dead) {
                IoWatch *w = s->dead;
                s->dead = w->next_dead;
                free(w);
        }
}

static int on_batch(sd_event_source *src, int fd, uint32_t revents, void *userdata) {
        IoSet *s = userdata;
        struct epoll_event ev[IOSET_BATCH];

        int n = epoll_wait(fd, ev, IOSET_BATCH, 0);
        if (n <= 0)
                return 0;
        s->dispatching++;
        for (int i = 0; i < n; i++) {
                IoWatch *w = ev[i].data.ptr;
                if (w->dead || !w->enabled)
                        continue;
                (void) w->cb(NULL, w->fd, ev[i].events, w->userdata);
        }
        if (--s->dispatching == 0)
                release_dead(s);
        if (s->after_batch)
                s->after_batch(s->after_batch_userdata);
        return 0;
}

int ioset_new(sd_event *e, IoSet **ret) {
        IoSet *s = calloc(1, sizeof(IoSet));
        int r;

        if (!s)
                return -ENOMEM;
        s->epfd[0] = s->epfd[1] = -1;
        for (int k = 0; k < 2; k++) {
                s->epfd[k] = epoll_create1(EPOLL_CLOEXEC);
                if (s->epfd[k] < 0) {
                        r = -errno;
                        ioset_free(s);
                        return r;
                }
                r = sd_event_add_io(e, &s->source[k], s->epfd[k], EPOLLIN, on_batch, s);
                if (r >= 0)
                        r = sd_event_source_set_priority(s->source[k], k ? SD_EVENT_PRIORITY_IMPORTANT
                                                                         : SD_EVENT_PRIORITY_NORMAL);
                if (r < 0) {
                        ioset_free(s);
                        return r;
                }
        }
        *ret = s;
        return 0;
}

IoSet *ioset_free(IoSet *s) {
        if (!s)
                return NULL;
        for (int k = 0; k < 2; k++) {
                sd_event_source_disable_unref(s->source[k]);
                safe_close(s->epfd[k]);
        }
        release_dead(s);
        free(s);
        return NULL;
}

static int ctl(IoWatch *w, int op) {
        struct epoll_event ev = { .events = w->events, .data.ptr = w };
        return epoll_ctl(w->set->epfd[w->boosted], op, w->fd, &ev) < 0 ? -errno : 0;
}

int io_watch_add(IoSet *s, IoWatch **ret, int fd, uint32_t events, io_handler_t cb, void *userdata) {
        IoWatch *w = calloc(1, sizeof(IoWatch));
        int r;

        if (!w)
                return -ENOMEM;
        *w = (IoWatch) { .set = s, .fd = fd, .events = events, .cb = cb, .userdata = userdata, .enabled = true };
        r = ctl(w, EPOLL_CTL_ADD);
        if (r < 0) {
                free(w);
                return r;
        }
        *ret = w;
        return 0;
}

IoWatch *io_watch_free(IoWatch *w) {
        if (!w)
                return NULL;
        if (w->enabled)
                (void) ctl(w, EPOLL_CTL_DEL);
        if (w->set->dispatching) {
                w->dead = true;
                w->next_dead = w->set->dead;
                w->set->dead = w;
        } else
                free(w);
        return NULL;
}

int io_watch_set_events(IoWatch *w, uint32_t events) {
        if (w->events == events)
                return 0;
        w->events = events;
        return w->enabled ? ctl(w, EPOLL_CTL_MOD) : 0;
}

int io_watch_set_enabled(IoWatch *w, bool enabled) {
        if (w->enabled == enabled)
                return 0;
        w->enabled = enabled;
        return ctl(w, enabled ? EPOLL_CTL_ADD : EPOLL_CTL_DEL);
}

int io_watch_set_boost(IoWatch *w, bool boost) {
        int r;

        if (w->boosted == boost)
                return 0;
        if (w->enabled && (r = ctl(w, EPOLL_CTL_DEL)) < 0)
                return r;
        w->boosted = boost;
        return w->enabled ? ctl(w, EPOLL_CTL_ADD) : 0;
}
