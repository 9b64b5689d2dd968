/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "backend-channel.h"
#include "backend.h"
#include "control.h"
#include "fdstore.h"
#include "frontend.h"
#include "log.h"
#include "manager.h"
#include "port.h"
#include "shadow-json.h"

/* Each slot of a state file holds this much; the pages are only allocated as written (a
 * typical port's state is 3-6 KiB; the largest, 509 memory regions and 256 rings, ~150 KiB). */
#define STATE_CAPACITY (512u * 1024)
/* Fds a port may keep besides the shadow's: two listeners, front-end, back-end. */
#define PORT_EXTRA_FDS 4u
#define WANTED_MAX (SHADOW_MAX_SAVED_FDS + PORT_EXTRA_FDS)

typedef struct StoreEntry {
        char name[40];
        int fd;                 /* the mirror's own copy of what the store holds */
        char *listen_path;      /* adopted: the path a listening socket is bound to */
        unsigned refs;          /* port states (and state files) that name it */
} StoreEntry;

struct PortMirror {
        Port *port;
        StoreEntry *state;      /* the state memfd */
        uint8_t *map;
        size_t map_size;
        size_t state_size;      /* the state file; the journal follows it */
        uint8_t *journal;
        unsigned journal_n;     /* entries written since the last state */
        bool journal_broken;    /* one could not be written: in doubt until the next state */
        StoreEntry *journal_refs[STATE_JOURNAL_ENTRIES * STATE_JOURNAL_MAX_FDS];
        unsigned n_journal_refs;
        uint64_t generation;
        StoreEntry **refs;      /* what the newest state names, in the order it was enumerated */
        int *ref_fds;           /* the port's fd number for each, at that commit */
        size_t n_refs;
        bool dirty;
        bool failed_logged;
        uint64_t doubt_since;   /* when the front-end's stream was last put in doubt */
        StoreEntry *pending_fe; /* a front-end connection accepted since the last state */
        PortMirror *next_dirty;
};

struct FdStore {
        Manager *manager;
        bool enabled;
        pid_t pid;
        uint32_t tag;           /* makes this process's names unique in the store */
        uint64_t next_id;
        StoreEntry **entries;
        size_t n_entries, allocated;
        StoreEntry **by_name;   /* during adoption: the entries sorted by name */
        size_t n_by_name;
        PortMirror *dirty_head;
        int *wanted;            /* scratch: WANTED_MAX fds */
        bool full_logged;
        int notify_fd;          /* one socket to NOTIFY_SOCKET for all the store's messages */
        char *crash_at;         /* tests only: see crash_point() */
        struct sockaddr_un notify_addr;
        socklen_t notify_len;
        FdStoreStats stats;
};

/* sd_pid_notify_with_fds() opens, uses and closes a socket per message: here one socket is
 * kept, so that storing an fd is one sendmsg(). systemd learns the sender from SO_PASSCRED,
 * as with sd_notify(). Falls back to libsystemd when NOTIFY_SOCKET cannot be used so. */
static int notify(FdStore *s, const char *msg, int fd) {
        if (s->notify_fd < 0)
                return fd >= 0 ? sd_pid_notify_with_fds(0, 0, msg, &fd, 1) : sd_pid_notify(0, 0, msg);
        struct iovec iov = { (void *) msg, strlen(msg) };
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } ctl = {};
        struct msghdr mh = { .msg_name = &s->notify_addr, .msg_namelen = s->notify_len, .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd >= 0) {
                mh.msg_control = ctl.buf;
                mh.msg_controllen = sizeof(ctl.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &fd, sizeof(int));
        }
        return sendmsg(s->notify_fd, &mh, MSG_NOSIGNAL) < 0 ? -errno : 1;
}

static void notify_open(FdStore *s) {
        const char *e = getenv("NOTIFY_SOCKET");
        size_t n = e ? strlen(e) : 0;

        s->notify_fd = -1;
        if (n < 2 || n >= sizeof(s->notify_addr.sun_path) || (e[0] != '/' && e[0] != '@'))
                return;
        s->notify_addr.sun_family = AF_UNIX;
        memcpy(s->notify_addr.sun_path, e, n);
        if (e[0] == '@')
                s->notify_addr.sun_path[0] = 0;         /* abstract */
        s->notify_len = offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/');
        s->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

/* Tests only (VHOST_RECOND_TEST_HOOKS=1 and VHOST_RECOND_TEST_CRASH_FILE=PATH): a process
 * that finds the file at its start takes the point named in it and removes the file; it then
 * kills itself there, so that each of the instants named in fdstore.h can be hit on purpose,
 * once. Read at the start, not at each point: a system call there would widen the very
 * windows the points are in. */
static char *crash_point_read(const char *path) {
        char buf[64];
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return NULL;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        safe_close(fd);
        (void) unlink(path);
        if (n <= 0)
                return NULL;
        buf[n] = 0;
        buf[strcspn(buf, "\n")] = 0;
        return strdup(buf);
}

static void crash_point(FdStore *s, const char *point) {
        if (s->crash_at && strcmp(s->crash_at, point) == 0)
                raise(SIGKILL);
}

static bool same_file(FdStore *s, int a, int b) {
        return syscall(SYS_kcmp, s->pid, s->pid, KCMP_FILE, a, b) == 0;
}

/* kcmp orders open files too: the entries are kept sorted by it, so that finding the entry
 * of an fd takes log2(entries) comparisons, not one per stored eventfd. 0: fd is e's file;
 * <0 before it; >0 after it. */
static int file_order(FdStore *s, int fd, const StoreEntry *e) {
        long r = syscall(SYS_kcmp, s->pid, s->pid, KCMP_FILE, fd, e->fd);
        return r == 0 ? 0 : r == 1 ? -1 : 1;
}

/* The index of fd's entry, or where it would go (*ret_found false). */
static size_t entry_search(FdStore *s, int fd, bool *ret_found) {
        size_t lo = 0, hi = s->n_entries;
        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = file_order(s, fd, s->entries[mid]);
                if (c == 0) {
                        *ret_found = true;
                        return mid;
                }
                if (c < 0)
                        hi = mid;
                else
                        lo = mid + 1;
        }
        *ret_found = false;
        return lo;
}

static StoreEntry *entry_add(FdStore *s, const char *name, int fd) {
        bool found;

        if (s->n_entries == s->allocated) {
                size_t n = s->allocated ? s->allocated * 2 : 64;
                StoreEntry **a = realloc(s->entries, n * sizeof(StoreEntry *));
                if (!a)
                        return NULL;
                s->entries = a;
                s->allocated = n;
        }
        StoreEntry *e = calloc(1, sizeof(StoreEntry));
        if (!e)
                return NULL;
        snprintf(e->name, sizeof(e->name), "%s", name);
        e->fd = fd;
        size_t at = entry_search(s, fd, &found);
        memmove(s->entries + at + 1, s->entries + at, (s->n_entries - at) * sizeof(StoreEntry *));
        s->entries[at] = e;
        s->n_entries++;
        return e;
}

static void entry_drop(FdStore *s, StoreEntry *e, bool remove) {
        char msg[80];

        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i] == e) {
                        memmove(s->entries + i, s->entries + i + 1, (s->n_entries - i - 1) * sizeof(StoreEntry *));
                        s->n_entries--;
                        break;
                }
        if (remove) {
                snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", e->name);
                (void) notify(s, msg, -1);
                s->stats.removes++;
        }
        safe_close(e->fd);
        free(e->listen_path);
        free(e);
}

static void entry_unref(FdStore *s, StoreEntry *e) {
        if (e && --e->refs == 0)
                entry_drop(s, e, true);
}

/* A new entry for fd: a copy of it goes to the store under a new name. */
static StoreEntry *entry_store(FdStore *s, int fd, const char *kind) {
        char name[40], msg[80];
        int copy, r;

        copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (copy < 0)
                return NULL;
        snprintf(name, sizeof(name), "vr.%s.%08x.%llx", kind, s->tag, (unsigned long long) s->next_id++);
        snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
        r = notify(s, msg, copy);
        if (r <= 0) {
                if (!s->full_logged)
                        log_warning_errno(r < 0 ? r : ENOTCONN,
                                          "Cannot put %s into the fd store (%m): a crash now costs connections", name);
                s->full_logged = true;
                safe_close(copy);
                return NULL;
        }
        s->stats.stores++;
        StoreEntry *e = entry_add(s, name, copy);
        if (!e) {
                snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
                (void) notify(s, msg, -1);
                safe_close(copy);
        }
        return e;
}

/* The entry holding the same open file as fd (as systemd compares them: it keeps one copy
 * of a file however often it is stored), a new one if none; with a reference taken. */
static StoreEntry *entry_for(FdStore *s, PortMirror *pm, size_t hint, int fd) {
        bool found;

        if (hint < pm->n_refs && pm->ref_fds[hint] == fd && pm->refs[hint] && same_file(s, fd, pm->refs[hint]->fd)) {
                pm->refs[hint]->refs++;
                return pm->refs[hint];
        }
        size_t at = entry_search(s, fd, &found);
        if (found) {
                s->entries[at]->refs++;
                return s->entries[at];
        }
        StoreEntry *e = entry_store(s, fd, "f");
        if (e)
                e->refs = 1;
        return e;
}

bool fdstore_enabled(const FdStore *s) {
        return s && s->enabled;
}

int fdstore_new(Manager *m, FdStore **ret) {
        FdStore *s = calloc(1, sizeof(FdStore));
        int pair[2];

        if (!s)
                return -ENOMEM;
        s->manager = m;
        s->pid = getpid();
        if (getrandom(&s->tag, sizeof(s->tag), GRND_NONBLOCK) != sizeof(s->tag))
                s->tag = (uint32_t) (now_realtime_usec() ^ ((uint64_t) s->pid << 16));
        s->enabled = getenv("NOTIFY_SOCKET") != NULL;
        s->notify_fd = -1;
        if (s->enabled) {
                /* kcmp tells two dups of one eventfd from two eventfds; without it, no mirror. */
                if (pipe2(pair, O_CLOEXEC) < 0)
                        return free(s), -errno;
                bool ok = same_file(s, pair[0], pair[0]) && !same_file(s, pair[0], pair[1]);
                safe_close(pair[0]);
                safe_close(pair[1]);
                if (!ok) {
                        log_warning("kcmp() is not allowed: the fd store is not kept in sync, a crash costs every connection");
                        s->enabled = false;
                }
        }
        if (getenv("VHOST_RECOND_TEST_HOOKS") && getenv("VHOST_RECOND_TEST_CRASH_FILE"))
                s->crash_at = crash_point_read(getenv("VHOST_RECOND_TEST_CRASH_FILE"));
        s->wanted = calloc(WANTED_MAX, sizeof(int));
        if (!s->wanted)
                return free(s), -ENOMEM;
        if (s->enabled)
                notify_open(s);

        /* What an earlier process stored: ours until a port names it, or removed. */
        for (size_t i = 0; i < m->n_passed; i++) {
                const char *name = m->passed_names[i];
                if (m->passed_fds[i] < 0 || !name || (strncmp(name, "vr.f.", 5) != 0 && strncmp(name, "vr.s.", 5) != 0))
                        continue;
                StoreEntry *e = entry_add(s, name, m->passed_fds[i]);
                if (!e)
                        continue;
                m->passed_fds[i] = -1;
                /* once here, so that each port finds its listeners without a system call per
                 * stored fd */
                struct sockaddr_un sa;
                socklen_t len = sizeof(sa);
                if (sd_is_socket(e->fd, AF_UNIX, SOCK_STREAM, 1) > 0 &&
                    getsockname(e->fd, (struct sockaddr *) &sa, &len) == 0 && len > offsetof(struct sockaddr_un, sun_path) &&
                    sa.sun_path[0])
                        e->listen_path = strndup(sa.sun_path, len - offsetof(struct sockaddr_un, sun_path));
        }
        *ret = s;
        return 0;
}

FdStore *fdstore_free(FdStore *s) {
        if (!s)
                return NULL;
        while (s->n_entries > 0)
                entry_drop(s, s->entries[0], false);
        free(s->entries);
        free(s->wanted);
        free(s->crash_at);
        safe_close(s->notify_fd);
        free(s);
        return NULL;
}

void fdstore_stats(const FdStore *s, FdStoreStats *ret) {
        *ret = s ? s->stats : (FdStoreStats) {};
        if (s)
                ret->entries = s->n_entries;
}

int fdstore_take_listener(FdStore *s, const char *path) {
        if (!s)
                return -1;
        for (size_t i = 0; i < s->n_entries; i++)
                if (s->entries[i]->listen_path && strcmp(s->entries[i]->listen_path, path) == 0) {
                        int fd = fcntl(s->entries[i]->fd, F_DUPFD_CLOEXEC, 3);
                        if (fd >= 0)
                                (void) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
                        return fd;
                }
        return -1;
}

static PortMirror *mirror_get(Port *p) {
        if (!p->mirror) {
                p->mirror = calloc(1, sizeof(PortMirror));
                if (p->mirror)
                        p->mirror->port = p;
        }
        return p->mirror;
}

void fdstore_port_changed(Port *p) {
        FdStore *s = p->manager->fdstore;
        if (!fdstore_enabled(s))
                return;
        PortMirror *pm = mirror_get(p);
        if (!pm || pm->dirty)
                return;
        pm->dirty = true;
        pm->next_dirty = s->dirty_head;
        s->dirty_head = pm;
}

void fdstore_doubt(Port *p, StateStream st) {
        PortMirror *pm = p->mirror;

        if (!pm || !pm->map) {
                fdstore_port_changed(p);
                return;
        }
        /* Set before the read or write it covers: the call that follows is opaque to the
         * compiler, so the store happens first. */
        volatile uint8_t *d = &((StateFileHeader *) pm->map)->doubt[st];
        bool was = *d;
        *d = 1;
        if (!was && st == STATE_STREAM_FRONTEND)
                pm->doubt_since = now_usec();
        /* A back-end that is being probed or replayed is not kept anyway (nor stored): the
         * end of the replay commits. */
        if ((!was && st != STATE_STREAM_BACKEND) || st == STATE_STREAM_FRONTEND ||
            p->backend_state == BACKEND_READY || p->backend_state == BACKEND_STOPPING)
                fdstore_port_changed(p);
}

void fdstore_reply_begin(Port *p) {
        PortMirror *pm = p->mirror;
        if (pm && pm->map) {
                volatile StateFileHeader *h = (volatile StateFileHeader *) pm->map;
                /* behind a reply still queued, this one cannot be told sent by the queue */
                h->reply_partial = p->frontend && vu_writer_pending(&p->frontend->writer);
                h->reply_seq = p->fe_replies + 1;
                h->doubt[STATE_STREAM_FRONTEND_REPLY] = 1;
        }
        fdstore_port_changed(p);
}

void fdstore_reply_sent(Port *p) {
        PortMirror *pm = p->mirror;
        const Connection *c = p->frontend;

        p->fe_replies++;
        if (!pm || !pm->map || !c)
                return;
        crash_point(p->manager->fdstore, "reply-sent");
        volatile StateFileHeader *h = (volatile StateFileHeader *) pm->map;
        if (vu_writer_pending(&c->writer)) {
                h->reply_partial = 1;   /* queued: in doubt until the commit that finds it sent */
                return;
        }
        h->frontend_replies = p->fe_replies;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        h->doubt[STATE_STREAM_FRONTEND_REPLY] = 0;
}

void fdstore_read_begin(Port *p) {
        PortMirror *pm = p->mirror;
        if (pm && pm->map)
                ((volatile StateFileHeader *) pm->map)->doubt[STATE_STREAM_FRONTEND_READ] = 1;
}

/* Writes request m, about to be handled with sequence number p->fe_seq + 1, to the journal
 * (its fds stored first). false: it could not be, and the journal is broken until the next
 * state (the request is then covered by nothing but the state that follows). */
static bool journal_request(FdStore *s, PortMirror *pm, const VuMsg *m) {
        Port *p = pm->port;
        const char *names[VU_MAX_FDS];

        fdstore_port_changed(p);
        /* one request missing from the journal, and the later ones cannot be replayed either */
        pm->journal_broken = pm->journal_broken || pm->journal_n >= STATE_JOURNAL_ENTRIES ||
                             m->n_fds > STATE_JOURNAL_MAX_FDS ||
                             pm->n_journal_refs + m->n_fds > ELEMENTSOF(pm->journal_refs);
        if (pm->journal_broken)
                return false;
        for (unsigned i = 0; i < m->n_fds; i++) {
                bool found;
                size_t at = entry_search(s, m->fds[i], &found);
                StoreEntry *e = found ? s->entries[at] : entry_store(s, m->fds[i], "f");
                if (!e) {
                        pm->journal_broken = true;
                        return false;
                }
                e->refs++;
                pm->journal_refs[pm->n_journal_refs++] = e;
                names[i] = e->name;
        }
        uint8_t raw[sizeof(VuHeader) + VU_MAX_PAYLOAD];        /* the header and payload, as on the wire */
        memcpy(raw, &m->hdr, sizeof(VuHeader));
        memcpy(raw + sizeof(VuHeader), m->payload.raw, MIN(m->hdr.size, VU_MAX_PAYLOAD));
        if (state_journal_write(pm->journal, pm->journal_n, pm->generation, p->fe_seq + 1, raw,
                                sizeof(VuHeader) + MIN(m->hdr.size, VU_MAX_PAYLOAD), names, m->n_fds) < 0) {
                pm->journal_broken = true;
                return false;
        }
        pm->journal_n++;
        s->stats.journaled++;
        return true;
}

/* The request m (NULL: none, or not whole yet) was read: into the journal, so that the
 * stream is known again. On any failure the stream stays in doubt until the next state. */
void fdstore_read_end(Port *p, const VuMsg *m) {
        FdStore *s = p->manager->fdstore;
        PortMirror *pm = p->mirror;
        const Connection *c = p->frontend;

        if (!pm || !pm->map || !c || !fdstore_enabled(s))
                return;
        volatile StateFileHeader *h = (volatile StateFileHeader *) pm->map;
        if (!m) {
                if (c->reader.have == 0)        /* nothing taken off the socket */
                        h->doubt[STATE_STREAM_FRONTEND_READ] = 0;
                return;
        }
        if (!journal_request(s, pm, m))
                return;
        h->frontend_read_seq = p->fe_seq + 1;
        if (c->reader.have == 0) {
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                h->doubt[STATE_STREAM_FRONTEND_READ] = 0;
        }
}

static int commit(FdStore *s, PortMirror *pm);

static void unlink_dirty(FdStore *s, PortMirror *pm) {
        if (!pm->dirty)
                return;
        for (PortMirror **pp = &s->dirty_head; *pp; pp = &(*pp)->next_dirty)
                if (*pp == pm) {
                        *pp = pm->next_dirty;
                        break;
                }
        pm->next_dirty = NULL;
        pm->dirty = false;
}

void fdstore_frontend_accepted(Port *p, int fd) {
        FdStore *s = p->manager->fdstore;
        PortMirror *pm = p->mirror;

        if (!fdstore_enabled(s) || !pm || !pm->map)
                return;
        /* one accepted before and not named by a state since: refused or gone */
        if (pm->pending_fe) {
                entry_unref(s, pm->pending_fe);
                pm->pending_fe = NULL;
        }
        /* The header names it first (by the id entry_store() gives it): a crash right after
         * the fd reaches the store still finds it. */
        volatile StateFileHeader *h = (volatile StateFileHeader *) pm->map;
        h->pending_frontend_tag = s->tag;
        h->pending_frontend_id = s->next_id + 1;
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        StoreEntry *e = entry_store(s, fd, "f");
        if (!e) {
                h->pending_frontend_id = 0;
                return;
        }
        crash_point(s, "frontend-stored");
        /* What this dispatch did before (the last front-end gone, say) goes into a state now,
         * before the new connection is read: a crash before that state is written takes the
         * new one back with nothing of the old (see restore_port: "fresh"). */
        if (pm->dirty) {
                unlink_dirty(s, pm);
                if (commit(s, pm) < 0) {
                        /* the state may not say what came before: not named, as before this */
                        h->pending_frontend_id = 0;
                        entry_drop(s, e, true);
                        fdstore_port_changed(p);
                        return;
                }
        }
        e->refs = 1;
        pm->pending_fe = e;
        fdstore_port_changed(p);
}

bool fdstore_peek_reads(const Port *p) {
        /* A state file taken over from a daemon that did not keep frontend_read_seq says
         * so until this one's first state is written (then the peek is safe to use). */
        return p->mirror && p->mirror->map && fdstore_enabled(p->manager->fdstore) &&
               (((const StateFileHeader *) p->mirror->map)->reserved & STATE_HEADER_READ_SEQ);
}

void fdstore_read_peeked(Port *p, const VuMsg *m) {
        PortMirror *pm = p->mirror;

        /* Not journaled: once taken off, only the next state will say where the stream is. */
        if (!journal_request(p->manager->fdstore, pm, m))
                ((volatile StateFileHeader *) pm->map)->doubt[STATE_STREAM_FRONTEND_READ] = 1;
        crash_point(p->manager->fdstore, "read-journaled");
}

void fdstore_read_taken(Port *p) {
        PortMirror *pm = p->mirror;
        ((volatile StateFileHeader *) pm->map)->frontend_read_seq = p->fe_seq + 1;
}

static bool frontend_idle(const Port *p) {
        const Connection *c = p->frontend;
        return !c || (c->reader.have == 0 && !vu_writer_pending(&c->writer) &&
                      backend_channel_idle(p->backend_channel, false));
}

/* The back-end can be kept by a new process: replayed, nothing awaited or half sent. */
static bool backend_keepable(const Port *p) {
        const Connection *c = p->backend;
        return c && p->backend_state == BACKEND_READY && !p->pending_head && !p->fe_head && c->reader.have == 0 &&
               !vu_writer_pending(&c->writer) && !c->failed && backend_channel_idle(p->backend_channel, true);
}

static json_object *msg_hex(const VuMsg *m) {
        size_t n = sizeof(m->hdr) + m->hdr.size;
        const uint8_t *h = (const uint8_t *) &m->hdr, *pl = m->payload.raw;
        char *s = malloc(2 * n + 1);
        if (!s)
                return NULL;
        static const char digits[] = "0123456789abcdef";
        for (size_t i = 0; i < n; i++) {
                uint8_t b = i < sizeof(m->hdr) ? h[i] : pl[i - sizeof(m->hdr)];
                s[2 * i] = digits[b >> 4];
                s[2 * i + 1] = digits[b & 15];
        }
        s[2 * n] = 0;
        json_object *o = json_object_new_string(s);
        free(s);
        return o;
}

static int msg_from_hex(const char *s, VuMsg *ret) {
        size_t len = strlen(s);
        uint8_t buf[sizeof(VuHeader) + VU_MAX_PAYLOAD];

        if (len % 2 || len / 2 < sizeof(VuHeader) || len / 2 > sizeof(buf))
                return -EBADMSG;
        for (size_t i = 0; i < len / 2; i++) {
                unsigned b;
                if (sscanf(s + 2 * i, "%2x", &b) != 1)
                        return -EBADMSG;
                buf[i] = (uint8_t) b;
        }
        memset(ret, 0, sizeof(*ret));
        memcpy(&ret->hdr, buf, sizeof(VuHeader));
        if (ret->hdr.size != len / 2 - sizeof(VuHeader))
                return -EBADMSG;
        memcpy(ret->payload.raw, buf + sizeof(VuHeader), ret->hdr.size);
        return 0;
}

/* The front-end's requests that were read, applied to the shadow, and not answered yet, in
 * their order: those the back-end owes an answer to, then those still queued. */
static json_object *requests_json(const Port *p) {
        json_object *a = json_object_new_array();
        for (const Pending *pd = p->pending_head; pd; pd = pd->next)
                if (pd->item)
                        json_object_array_add(a, msg_hex(&pd->item->msg));
        for (const FrontendItem *it = p->fe_head; it; it = it->next)
                if (it->needs_reply)
                        json_object_array_add(a, msg_hex(&it->msg));
        return a;
}

static json_object *name_or_null(StoreEntry *e) {
        return e ? json_object_new_string(e->name) : NULL;
}

static int state_file_open(FdStore *s, PortMirror *pm) {
        size_t state_size = state_file_size(STATE_CAPACITY), size = state_size + STATE_JOURNAL_SIZE;
        int fd = memfd_create("vhost-recon-state", MFD_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (ftruncate(fd, size) < 0) {
                safe_close(fd);
                return -errno;
        }
        void *map = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
                safe_close(fd);
                return -errno;
        }
        (void) state_file_init(map, state_size);
        StoreEntry *e = entry_store(s, fd, "s");
        safe_close(fd);
        if (!e) {
                munmap(map, size);
                return -EIO;
        }
        e->refs = 1;
        pm->state = e;
        pm->map = map;
        pm->map_size = size;
        pm->state_size = state_size;
        pm->journal = (uint8_t *) map + state_size;
        return 0;
}

static int commit(FdStore *s, PortMirror *pm) {
        Port *p = pm->port;
        uint64_t start = now_usec();
        int *fds = s->wanted + PORT_EXTRA_FDS;
        size_t n_shadow = 0, n = 0;
        int listen_idx[_PORT_SIDE_MAX] = { -1, -1 }, fe_idx = -1, be_idx = -1;
        json_object *shadow, *state, *names;
        StoreEntry **now;
        int r;

        if (!pm->map) {
                r = state_file_open(s, pm);
                if (r < 0) {
                        if (!pm->failed_logged)
                                log_warning_errno(r, "%s: cannot create its state file in the fd store: %m", p->config.name);
                        pm->failed_logged = true;
                        return r;
                }
        }

        /* Everything the port keeps, in a stable order (so the hint finds last commit's entry). */
        for (int side = 0; side < _PORT_SIDE_MAX; side++)
                if (p->listen_fd[side] >= 0 && !p->listen_from_unit[side]) {
                        listen_idx[side] = (int) n;
                        s->wanted[n++] = p->listen_fd[side];
                }
        if (p->frontend) {
                fe_idx = (int) n;
                s->wanted[n++] = p->frontend->fd;
        }
        /* A back-end that could not be kept is not stored: if the daemon dies now, its
         * connection closes with it and it comes back for a full replay. */
        bool keep_backend = backend_keepable(p);
        if (keep_backend) {
                be_idx = (int) n;
                s->wanted[n++] = p->backend->fd;
        }
        /* the shadow's fds follow, whatever kinds it has (shadow_to_json enumerates them) */
        shadow_to_json(&p->shadow, &shadow, fds, &n_shadow);
        memmove(s->wanted + n, fds, n_shadow * sizeof(int));
        size_t shadow_base = n;
        n += n_shadow;

        now = calloc(n ? n : 1, sizeof(StoreEntry *));
        int *now_fds = malloc((n ? n : 1) * sizeof(int));
        if (!now || !now_fds) {
                free(now);
                free(now_fds);
                json_object_put(shadow);
                return -ENOMEM;
        }
        for (size_t i = 0; i < n; i++) {
                now[i] = entry_for(s, pm, i, s->wanted[i]);
                now_fds[i] = s->wanted[i];
        }

        state = json_object_new_object();
        json_object_object_add(state, "port", json_object_new_string(p->config.name));
        names = json_object_new_array();
        for (size_t i = shadow_base; i < n; i++)
                json_object_array_add(names, name_or_null(now[i]));
        json_object_object_add(state, "fds", names);
        json_object_object_add(state, "shadow", shadow);
        for (int side = 0; side < _PORT_SIDE_MAX; side++)
                if (listen_idx[side] >= 0)
                        json_object_object_add(state, side == PORT_FRONTEND ? "listen_frontend" : "listen_backend",
                                               name_or_null(now[listen_idx[side]]));
        if (fe_idx >= 0) {
                json_object_object_add(state, "frontend", name_or_null(now[fe_idx]));
                json_object_object_add(state, "requests", requests_json(p));
        }
        /* also without a front-end: a connection accepted after this state counts on from here */
        json_object_object_add(state, "fe_seq", json_object_new_uint64(p->fe_seq));
        json_object_object_add(state, "replies", json_object_new_uint64(p->fe_replies));
        if (keep_backend) {
                json_object_object_add(state, "backend", name_or_null(now[be_idx]));
                json_object_object_add(state, "backend_protocol_features", json_object_new_uint64(p->backend_protocol_features));
        } else if (p->backend)
                json_object_object_add(state, "backend_busy", json_object_new_string(
                        p->backend_state == BACKEND_PROBING ? "being probed" :
                        p->backend_state == BACKEND_REPLAYING ? "being replayed" :
                        p->backend_state == BACKEND_STOPPING ? "being stopped" : "waiting for an answer"));
        json_object_object_add(state, "link_up", json_object_new_boolean(p->link_up));
        json_object_object_add(state, "link_generation", json_object_new_uint64(p->link_generation));
        json_object_object_add(state, "link_changed_realtime_usec", json_object_new_uint64(p->link_changed_realtime_usec));
        json_object_object_add(state, "last_error", json_object_new_string(p->last_error));
        json_object_object_add(state, "stats", port_stats_to_json(&p->stats));

        size_t len;
        const char *text = json_object_to_json_string_length(state, JSON_C_TO_STRING_PLAIN, &len);
        r = state_file_write(pm->map, pm->state_size, text, len, pm->generation + 1);
        json_object_put(state);
        if (r < 0) {
                /* The old state stays, and names the old entries: keep those, drop the new. */
                for (size_t i = 0; i < n; i++)
                        entry_unref(s, now[i]);
                free(now);
                free(now_fds);
                if (!pm->failed_logged)
                        log_warning_errno(r, "%s: cannot write its state (%zu bytes) to the fd store: %m", p->config.name, len);
                pm->failed_logged = true;
                return r;
        }
        pm->generation++;
        s->stats.bytes += len;
        /* the journal starts again after this state, which holds what it recorded */
        for (unsigned i = 0; i < pm->n_journal_refs; i++)
                entry_unref(s, pm->journal_refs[i]);
        pm->n_journal_refs = 0;
        pm->journal_n = 0;
        pm->journal_broken = false;

        /* The state says where each stream stands: a stream between messages is no longer in
         * doubt. One in the middle of one stays so. */
        StateFileHeader *h = (StateFileHeader *) pm->map;
        h->frontend_replies = p->fe_replies;
        /* every request up to fe_seq is off the socket (peeks are taken in their dispatch);
         * entries of the journal before this state are not read any more */
        h->frontend_read_seq = p->fe_seq;
        h->reserved |= STATE_HEADER_READ_SEQ;
        if (pm->pending_fe) {
                /* this state names it if the port kept it */
                h->pending_frontend_id = 0;
                entry_unref(s, pm->pending_fe);
                pm->pending_fe = NULL;
        }
        if (frontend_idle(p)) {
                if (h->doubt[STATE_STREAM_FRONTEND] && pm->doubt_since) {
                        s->stats.doubt_windows++;
                        s->stats.doubt_usec += now_usec() - pm->doubt_since;
                        pm->doubt_since = 0;
                }
                h->doubt[STATE_STREAM_FRONTEND] = 0;
                h->doubt[STATE_STREAM_FRONTEND_REPLY] = 0;
                h->reply_partial = 0;
                h->doubt[STATE_STREAM_FRONTEND_READ] = 0;
        }
        if (!p->backend || backend_keepable(p))
                h->doubt[STATE_STREAM_BACKEND] = 0;

        /* Only now may what the old state named leave the store. */
        for (size_t i = 0; i < pm->n_refs; i++)
                entry_unref(s, pm->refs[i]);
        free(pm->refs);
        free(pm->ref_fds);
        pm->refs = now;
        pm->ref_fds = now_fds;
        pm->n_refs = n;
        s->stats.commits++;
        s->stats.commit_usec += now_usec() - start;
        return 0;
}

void fdstore_commit_dirty(Manager *m) {
        FdStore *s = m->fdstore;
        if (!fdstore_enabled(s))
                return;
        while (s->dirty_head) {
                PortMirror *pm = s->dirty_head;
                s->dirty_head = pm->next_dirty;
                pm->next_dirty = NULL;
                pm->dirty = false;
                (void) commit(s, pm);
        }
}

void fdstore_commit_all(Manager *m) {
        for (size_t i = 0; i < m->n_ports; i++)
                fdstore_port_changed(m->ports[i]);
        fdstore_commit_dirty(m);
}

static void mirror_release(FdStore *s, PortMirror *pm, bool removed) {
        unlink_dirty(s, pm);
        for (size_t i = 0; i < pm->n_refs; i++)
                if (pm->refs[i]) {
                        if (removed)
                                entry_unref(s, pm->refs[i]);
                        else
                                pm->refs[i]->refs--;
                }
        for (unsigned i = 0; i < pm->n_journal_refs; i++) {
                if (removed)
                        entry_unref(s, pm->journal_refs[i]);
                else
                        pm->journal_refs[i]->refs--;
        }
        if (pm->pending_fe) {
                if (removed)
                        entry_unref(s, pm->pending_fe);
                else
                        pm->pending_fe->refs--;
        }
        if (pm->state) {
                if (removed)
                        entry_unref(s, pm->state);
                else
                        pm->state->refs--;
        }
        if (pm->map)
                munmap(pm->map, pm->map_size);
        free(pm->refs);
        free(pm->ref_fds);
        free(pm);
}

void fdstore_port_free(Port *p, bool removed) {
        if (!p->mirror)
                return;
        mirror_release(p->manager->fdstore, p->mirror, removed);
        p->mirror = NULL;
}

/* Adoption. */

typedef struct FoundState {
        StoreEntry *entry;
        uint8_t *map;
        size_t size, state_size;
        uint64_t generation;
        json_object *json;
        const char *port;
} FoundState;

static int cmp_name(const void *a, const void *b) {
        return strcmp((*(StoreEntry *const *) a)->name, (*(StoreEntry *const *) b)->name);
}

static int cmp_key(const void *key, const void *e) {
        return strcmp(key, (*(StoreEntry *const *) e)->name);
}

static StoreEntry *entry_by_name(FdStore *s, const char *name) {
        if (!name || !s->by_name)
                return NULL;
        StoreEntry **e = bsearch(name, s->by_name, s->n_by_name, sizeof(StoreEntry *), cmp_key);
        return e ? *e : NULL;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ? json_object_get_string(v)
                                                                                             : NULL;
}

static uint64_t get_u64(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

static bool peer_gone(int fd) {
        struct pollfd pfd = { .fd = fd, .events = POLLRDHUP };
        return poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

static int dup_entry(StoreEntry *e) {
        return e ? fcntl(e->fd, F_DUPFD_CLOEXEC, 3) : -1;
}

/* The requests the state lists as unanswered, less the first `answered` (the replies sent
 * after that state was written, in order, as the front-end is answered in order). */
static void requeue_requests(Port *p, json_object *a, size_t answered) {
        size_t n = a && json_object_is_type(a, json_type_array) ? json_object_array_length(a) : 0;

        for (size_t i = answered; i < n && i < FRONTEND_MAX_QUEUED; i++) {
                json_object *v = json_object_array_get_idx(a, i);
                FrontendItem *it = calloc(1, sizeof(FrontendItem));
                if (!it)
                        return;
                /* written by the daemon itself; its fds are in the shadow, the answer needs none */
                if (!json_object_is_type(v, json_type_string) || msg_from_hex(json_object_get_string(v), &it->msg) < 0) {
                        free(it);
                        continue;
                }
                frontend_enqueue(p, it, true);
        }
}

/* Journal entry e was written but perhaps not taken off the socket: it was not if the same
 * bytes with the same fds are at the socket's head. (The front-end sending the same request
 * twice with the same fds, a no-reply request applied alike once or twice, is the one case
 * this cannot tell apart: it takes the socket's copy, and the device ends the same.) */
static bool still_on_socket(FdStore *s, int fd, const StateJournalEntry *e) {
        VuMsg m;
        size_t len;
        bool same;

        if (vu_reader_peek(fd, &m, &len, NULL) <= 0)
                return false;
        same = len == e->length && m.n_fds == e->n_names && memcmp(&m.hdr, e->data, sizeof(VuHeader)) == 0 &&
               memcmp(m.payload.raw, e->data + sizeof(VuHeader), m.hdr.size) == 0;
        for (unsigned k = 0; same && k < m.n_fds; k++) {
                StoreEntry *se = entry_by_name(s, e->names[k]);
                same = se && same_file(s, m.fds[k], se->fd);
        }
        vu_msg_close_fds(&m);
        return same;
}

/* The requests the old process read after its last state, in order, handled as if they had
 * just arrived: applied, forwarded to a kept back-end, answered (replies it had sent already
 * are not sent again: replies_to_skip). */
static int replay_journal(FdStore *s, Port *p, FoundState *f) {
        const StateFileHeader *h = (const StateFileHeader *) f->map;
        unsigned n = 0;

        for (unsigned i = 0; i < STATE_JOURNAL_ENTRIES && p->frontend; i++) {
                const StateJournalEntry *e;
                VuMsg m;
                int r;

                if (state_journal_read(f->map + f->state_size, i, f->generation, p->fe_seq + 1, &e) < 0)
                        break;
                if ((h->reserved & STATE_HEADER_READ_SEQ) && e->seq > h->frontend_read_seq &&
                    still_on_socket(s, p->frontend->fd, e)) {
                        log_info("%s: the request the old process was reading is still on the socket; read "
                                 "from there", p->config.name);
                        break;
                }
                if (e->length < sizeof(VuHeader))
                        return -EBADMSG;
                memset(&m, 0, sizeof(m));
                memcpy(&m.hdr, e->data, sizeof(VuHeader));
                if (m.hdr.size != e->length - sizeof(VuHeader) || m.hdr.size > VU_MAX_PAYLOAD)
                        return -EBADMSG;
                memcpy(m.payload.raw, e->data + sizeof(VuHeader), m.hdr.size);
                for (unsigned k = 0; k < e->n_names; k++) {
                        int fd = dup_entry(entry_by_name(s, e->names[k]));
                        if (fd < 0) {
                                vu_msg_close_fds(&m);
                                return -EBADF;
                        }
                        m.fds[m.n_fds++] = fd;
                }
                r = port_frontend_message(p, &m);
                vu_msg_close_fds(&m);
                if (r < 0)
                        return r;
                n++;
        }
        if (n > 0)
                log_info("%s: %u front-end request%s read before the crash replayed from the journal", p->config.name, n,
                         n == 1 ? "" : "s");
        return 0;
}

/* The front-end connection the header names as accepted after its state, if it is stored. */
static StoreEntry *pending_frontend(FdStore *s, const StateFileHeader *h) {
        char name[40];

        if (h->pending_frontend_id == 0)
                return NULL;
        snprintf(name, sizeof(name), "vr.f.%08x.%llx", h->pending_frontend_tag,
                 (unsigned long long) (h->pending_frontend_id - 1));
        return entry_by_name(s, name);
}

/* The reply the old process was sending when it died reached the front-end if it is still
 * queued for it, or if the front-end has sent something since: a front-end waits for each
 * answer before its next request (QEMU and DPDK's virtio-user do). Otherwise it cannot be
 * told from a reply never sent. */
static bool reply_went_out(int fd) {
        int n = 0;
        if (ioctl(fd, SIOCOUTQ, &n) == 0 && n > 0)
                return true;
        return ioctl(fd, SIOCINQ, &n) == 0 && n > 0;
}

/* Takes port p back from state f. 1: its front-end is back; 0: nothing to take back. */
static int restore_port(FdStore *s, Port *p, FoundState *f) {
        const StateFileHeader *h = (const StateFileHeader *) f->map;
        json_object *j = f->json, *v;
        const char *reason = NULL, *name = p->config.name;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds = 0;
        int fe = -1, be = -1, r;

        StoreEntry *fe_entry, *pending_entry = pending_frontend(s, h);
        /* pending: a connection accepted after the state; fresh: and the state's device was
         * another front-end's, which left in the same instant (nothing of it is taken back) */
        bool pending = false, fresh = false;
        if (json_object_object_get_ex(j, "frontend", &v)) {
                fe_entry = entry_by_name(s, get_str(j, "frontend"));
                if (pending_entry && (!fe_entry || peer_gone(fe_entry->fd))) {
                        log_info("%s: its front-end left, and the next one was accepted just before the crash", name);
                        fe_entry = pending_entry;
                        pending = fresh = true;
                }
        } else {
                /* none, unless one was accepted after this state */
                fe_entry = pending_entry;
                if (!fe_entry)
                        return 0;
                pending = true;
        }
        if (!fe_entry) {
                log_warning("%s: its front-end connection is not in the fd store (its peer left while the daemon "
                            "was down); the port waits for a new one", name);
                return 0;
        }
        uint64_t sent_replies = h->frontend_replies;
        bool reply_doubt = h->doubt[STATE_STREAM_FRONTEND_REPLY];
        if (fresh)      /* the doubts were about the stream of the front-end that left */
                reply_doubt = false;
        else if (reply_doubt && h->reply_seq && h->frontend_replies >= h->reply_seq)
                reply_doubt = false;    /* counted: killed before the doubt byte was cleared */
        else if (reply_doubt && !h->doubt[STATE_STREAM_FRONTEND] && !h->doubt[STATE_STREAM_FRONTEND_READ] &&
            !h->reply_partial && reply_went_out(fe_entry->fd)) {
                log_info("%s: the daemon died as it answered the front-end, and the answer reached it", name);
                reply_doubt = false;
                sent_replies++;
        }
        if (!fresh && (h->doubt[STATE_STREAM_FRONTEND] || reply_doubt || h->doubt[STATE_STREAM_FRONTEND_READ])) {
                log_warning("%s: the daemon died while %s the front-end's stream: its position is unknown, closing "
                            "that connection", name,
                            h->doubt[STATE_STREAM_FRONTEND_READ] ? "reading" :
                            reply_doubt ? "answering on" : "writing or relaying on");
                return 0;
        }
        if (peer_gone(fe_entry->fd)) {
                log_warning("%s: the front-end left while the daemon was down; closing its connection", name);
                return 0;
        }

        if (!fresh && json_object_object_get_ex(j, "fds", &v) && json_object_is_type(v, json_type_array))
                n_fds = MIN(json_object_array_length(v), (size_t) SHADOW_MAX_SAVED_FDS);
        for (size_t i = 0; i < n_fds; i++) {
                json_object *x = json_object_array_get_idx(v, i);
                StoreEntry *e = x && json_object_is_type(x, json_type_string) ? entry_by_name(s, json_object_get_string(x)) : NULL;
                fds[i] = e ? e->fd : -1;
        }
        /* shadow_from_json takes copies; a missing one (-1) fails it ("... without its fd") */
        r = fresh ? 0 : shadow_from_json(&p->shadow, json_object_object_get(j, "shadow"), fds, n_fds, &reason);
        if (r < 0) {
                log_warning("%s: its state in the fd store is unusable (%s); closing its front-end", name,
                            reason ? reason : strerror(-r));
                return 0;
        }
        fe = dup_entry(fe_entry);
        r = fe < 0 ? -errno : connection_new(p, PORT_FRONTEND, fe, &p->frontend);
        if (r < 0) {
                shadow_reset(&p->shadow);
                return log_warning_errno(r, "%s: cannot take its front-end back: %m", name), 0;
        }
        if (pending && !port_peer_allowed(p, &p->frontend->peer)) {
                log_warning("%s: the front-end connection accepted before the crash is refused by allow_uids/allow_gids",
                            name);
                p->frontend = connection_free(p->frontend);
                shadow_reset(&p->shadow);
                return 0;
        }
        if (pending)
                log_info("%s: the front-end connection accepted just before the crash (pid %d) is taken back", name,
                         (int) p->frontend->peer.pid);
        /* fresh: none of its requests has been read yet (the accept commits the port first) */
        p->fe_seq = fresh ? 0 : get_u64(j, "fe_seq");
        p->replay_seq = p->fe_seq;
        uint64_t replies = fresh ? sent_replies : get_u64(j, "replies");
        json_object *requests = fresh ? NULL : json_object_object_get(j, "requests");
        size_t n_requests = requests && json_object_is_type(requests, json_type_array) ? json_object_array_length(requests) : 0;
        if (sent_replies < replies) {
                log_warning("%s: the front-end's reply count (%llu) is behind its state (%llu); closing that "
                            "connection", name, (unsigned long long) sent_replies, (unsigned long long) replies);
                p->frontend = connection_free(p->frontend);
                shadow_reset(&p->shadow);
                return 0;
        }
        /* replies sent after the state was written: to the listed requests first, in order,
         * then to requests in the journal */
        uint64_t answered = sent_replies - replies;
        size_t listed_answered = (size_t) MIN(answered, (uint64_t) n_requests);
        p->fe_replies = sent_replies - (answered - listed_answered);
        p->replies_to_skip = answered - listed_answered;

        /* a back-end set up for the front-end that left is not kept for the next one */
        StoreEntry *be_entry = fresh ? NULL : entry_by_name(s, get_str(j, "backend"));
        bool be_doubt = h->doubt[STATE_STREAM_BACKEND];
        if (be_entry && !be_doubt && !peer_gone(be_entry->fd) && (be = dup_entry(be_entry)) >= 0 &&
            connection_new(p, PORT_BACKEND, be, &p->backend) >= 0) {
                p->backend_state = BACKEND_READY;
                p->backend_owner_sent = true;
                p->backend_protocol_features = get_u64(j, "backend_protocol_features");
                /* The relay of its channel went with the old process: a new channel. */
                if (p->shadow.backend_req_fd >= 0 && (p->backend_protocol_features & VU_BIT(VU_PF_BACKEND_REQ))) {
                        VuMsg set;
                        vu_msg_init(&set, VU_SET_BACKEND_REQ_FD,
                                    p->backend_protocol_features & VU_BIT(VU_PF_REPLY_ACK) ? VU_FLAG_NEED_REPLY : 0);
                        set.fds[0] = p->shadow.backend_req_fd;
                        set.n_fds = 1;
                        (void) backend_send_setup(p, &set, PENDING_INTERNAL, NULL);
                }
        } else if (be_entry && !be_doubt && peer_gone(be_entry->fd))
                log_info("%s: the back-end left while the daemon was down", name);
        else if (be_entry || get_str(j, "backend_busy"))
                log_warning("%s: the back-end was %s when the daemon died; closing it: it gets a full replay on a "
                            "fresh connection", name,
                            be_entry ? "in the middle of a message" : get_str(j, "backend_busy"));
        else if (be_doubt)
                log_warning("%s: a back-end was being probed or replayed when the daemon died; its connection closed "
                            "with the daemon: it gets a full replay on a fresh connection", name);

        requeue_requests(p, requests, listed_answered);
        if ((!fresh && replay_journal(s, p, f) < 0) || p->replies_to_skip > 0) {
                log_warning("%s: the front-end's requests read before the crash cannot all be replayed (%llu replies "
                            "unaccounted for); closing that connection", name, (unsigned long long) p->replies_to_skip);
                p->replies_to_skip = 0;
                port_connection_lost(p, PORT_FRONTEND, 0, "its requests could not be replayed");
                return 0;
        }
        port_stats_from_json(&p->stats, json_object_object_get(j, "stats"));
        if (pending)
                p->stats.frontend_connects++;   /* counted after that state */
        p->link_up = json_object_object_get_ex(j, "link_up", &v) && json_object_get_boolean(v);
        p->link_generation = get_u64(j, "link_generation");
        p->link_changed_realtime_usec = get_u64(j, "link_changed_realtime_usec");
        if (get_str(j, "last_error"))
                snprintf(p->last_error, sizeof(p->last_error), "%s", get_str(j, "last_error"));
        log_info("%s: restored from the fd store (state %llu): front-end pid %d, back-end %s, %u vrings, %u requests "
                 "to answer", name, (unsigned long long) f->generation, (int) p->frontend->peer.pid,
                 p->backend ? "kept" : "to reconnect", p->shadow.n_vrings, p->fe_queued);
        return 1;
}

int fdstore_adopt(Manager *m) {
        FdStore *s = m->fdstore;
        FoundState *found = NULL;
        size_t n_found = 0, n_entries_before;
        int restored = 0;

        if (!s)
                return 0;
        n_entries_before = s->n_entries;
        if (n_entries_before > 0) {
                found = calloc(n_entries_before, sizeof(FoundState));
                s->by_name = malloc(n_entries_before * sizeof(StoreEntry *));
        }
        if (s->by_name) {
                memcpy(s->by_name, s->entries, n_entries_before * sizeof(StoreEntry *));
                s->n_by_name = n_entries_before;
                qsort(s->by_name, s->n_by_name, sizeof(StoreEntry *), cmp_name);
        }
        for (size_t i = 0; found && i < s->n_entries; i++) {
                StoreEntry *e = s->entries[i];
                struct stat st;
                const void *data;
                size_t len;
                uint64_t gen;

                if (strncmp(e->name, "vr.s.", 5) != 0 || fstat(e->fd, &st) < 0 || st.st_size <= STATE_JOURNAL_SIZE)
                        continue;
                size_t state_size = (size_t) st.st_size - STATE_JOURNAL_SIZE;
                void *map = mmap(NULL, st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, e->fd, 0);
                if (map == MAP_FAILED)
                        continue;
                json_object *j = NULL;
                char *text = NULL;
                if (state_file_read(map, state_size, &data, &len, &gen) == 0)
                        text = strndup(data, len);
                j = text ? json_tokener_parse(text) : NULL;
                free(text);
                if (!j || !get_str(j, "port")) {
                        log_warning("fd store: %s holds no whole state; removing it", e->name);
                        json_object_put(j);
                        munmap(map, st.st_size);
                        continue;
                }
                found[n_found++] = (FoundState) { e, map, st.st_size, state_size, gen, j, get_str(j, "port") };
        }

        for (size_t i = 0; i < n_found; i++) {
                FoundState *f = &found[i];
                Port *p = manager_find_port(m, f->port);
                bool newest = true;
                for (size_t k = 0; k < n_found; k++)
                        if (k != i && strcmp(found[k].port, f->port) == 0 && found[k].generation > f->generation)
                                newest = false;
                if (!newest)
                        continue;
                if (!p) {
                        log_warning("fd store: port %s is no longer configured; closing what it kept", f->port);
                        continue;
                }
                PortMirror *pm = mirror_get(p);
                if (!pm || pm->map)
                        continue;
                restored += restore_port(s, p, f);
                /* The port goes on writing this state file: the store is not touched. */
                pm->state = f->entry;
                f->entry->refs++;
                pm->map = f->map;
                pm->map_size = f->size;
                pm->state_size = f->state_size;
                pm->journal = f->map + f->state_size;
                pm->generation = f->generation;
                /* taken back or not, the old process's pending front-end is settled */
                ((StateFileHeader *) pm->map)->pending_frontend_id = 0;
                f->map = NULL;
        }

        free(s->by_name);
        s->by_name = NULL;
        s->n_by_name = 0;
        /* The first commit names what each port took back; the rest leaves the store. */
        fdstore_commit_all(m);
        size_t dropped = 0;
        for (size_t i = 0; i < s->n_entries;)
                if (s->entries[i]->refs == 0) {
                        entry_drop(s, s->entries[i], true);
                        dropped++;
                } else
                        i++;
        if (n_entries_before > 0)
                log_info("fd store: %zu fds adopted, %zu no longer needed removed, %d port%s restored",
                         n_entries_before - dropped, dropped, restored, restored == 1 ? "" : "s");
        for (size_t i = 0; i < n_found; i++) {
                if (found[i].map)
                        munmap(found[i].map, found[i].size);
                json_object_put(found[i].json);
        }
        free(found);

        for (size_t i = 0; i < m->n_ports; i++)
                if (m->ports[i]->frontend) {
                        frontend_pump(m->ports[i]);
                        port_update_link(m->ports[i]);
                }
        return restored;
}
