/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fd-util.h"
#include "macro.h"
#include "shadow-json.h"

static json_object *u64(uint64_t v) {
        return json_object_new_uint64(v);
}

static void add_opt_u64(json_object *o, const char *key, bool set, uint64_t v) {
        json_object_object_add(o, key, set ? u64(v) : NULL);
}

/* An IOTLB entry in the state: iova, size, uaddr (little-endian), perm. */
#define IOTLB_PACKED_SIZE 25u

static void put_le64(uint8_t *p, uint64_t v) {
        for (int i = 0; i < 8; i++)
                p[i] = (uint8_t) (v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p) {
        uint64_t v = 0;
        for (int i = 7; i >= 0; i--)
                v = v << 8 | p[i];
        return v;
}

static int nibble(char c) {
        return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static json_object *hex(const uint8_t *b, size_t n) {
        char *s = malloc(n * 2 + 1);
        if (!s)
                return NULL;
        static const char digits[] = "0123456789abcdef";
        /* no sprintf: the fd store writes this on every change */
        for (size_t i = 0; i < n; i++) {
                s[2 * i] = digits[b[i] >> 4];
                s[2 * i + 1] = digits[b[i] & 15];
        }
        s[2 * n] = 0;
        json_object *o = json_object_new_string(s);
        free(s);
        return o;
}

static int add_fd(int fd, int *fds, size_t *n) {
        if (fd < 0)
                return -1;
        fds[*n] = fd;
        return (int) (*n)++;
}

int shadow_to_json(const Shadow *s, json_object **ret, int *fds, size_t *ret_n_fds) {
        json_object *o = json_object_new_object(), *mem = json_object_new_array(), *rings = json_object_new_array();
        json_object *be = json_object_new_object();
        size_t n = 0;

        json_object_object_add(o, "version", json_object_new_int(1));
        json_object_object_add(o, "owner", json_object_new_boolean(s->owner));
        add_opt_u64(o, "features", s->features_set, s->features);
        add_opt_u64(o, "protocol_features", s->protocol_features_set, s->protocol_features);
        add_opt_u64(o, "status", s->status_set, s->status);
        add_opt_u64(o, "mtu", s->mtu_set, s->mtu);
        json_object_object_add(o, "memory_set", json_object_new_boolean(s->memory_set));
        json_object_object_add(o, "memory_by_slots", json_object_new_boolean(s->memory_by_slots));
        for (unsigned i = 0; i < s->memory.n_regions; i++) {
                const GuestRegion *g = &s->memory.regions[i];
                json_object *r = json_object_new_object();
                json_object_object_add(r, "guest_phys_addr", u64(g->info.guest_phys_addr));
                json_object_object_add(r, "memory_size", u64(g->info.memory_size));
                json_object_object_add(r, "userspace_addr", u64(g->info.userspace_addr));
                json_object_object_add(r, "mmap_offset", u64(g->info.mmap_offset));
                json_object_object_add(r, "fd", json_object_new_int(add_fd(g->fd, fds, &n)));
                json_object_array_add(mem, r);
        }
        json_object_object_add(o, "memory", mem);
        for (unsigned i = 0; i < s->n_vrings; i++) {
                const ShadowVring *v = &s->vrings[i];
                json_object *r = json_object_new_object();
                json_object_object_add(r, "index", json_object_new_int(i));
                add_opt_u64(r, "num", v->num_set, v->num);
                add_opt_u64(r, "base", v->base_set, v->base);
                if (v->addr_set) {
                        json_object *a = json_object_new_object();
                        json_object_object_add(a, "flags", u64(v->addr.flags));
                        json_object_object_add(a, "desc", u64(v->addr.desc_user_addr));
                        json_object_object_add(a, "used", u64(v->addr.used_user_addr));
                        json_object_object_add(a, "avail", u64(v->addr.avail_user_addr));
                        json_object_object_add(a, "log", u64(v->addr.log_guest_addr));
                        json_object_object_add(r, "addr", a);
                }
                /* -1: set without an fd (VU_VRING_NOFD); absent: never set */
                if (v->kick_set)
                        json_object_object_add(r, "kick", json_object_new_int(add_fd(v->kick_fd, fds, &n)));
                if (v->call_set)
                        json_object_object_add(r, "call", json_object_new_int(add_fd(v->call_fd, fds, &n)));
                if (v->err_set)
                        json_object_object_add(r, "err", json_object_new_int(add_fd(v->err_fd, fds, &n)));
                if (v->enable_set)
                        json_object_object_add(r, "enabled", json_object_new_boolean(v->enabled));
                json_object_object_add(r, "started", json_object_new_boolean(v->started));
                add_opt_u64(r, "resume", v->resume_valid, v->resume);
                json_object_array_add(rings, r);
        }
        json_object_object_add(o, "vrings", rings);
        if (s->backend_req_fd >= 0)
                json_object_object_add(o, "backend_req_fd", json_object_new_int(add_fd(s->backend_req_fd, fds, &n)));
        if (s->inflight_set) {
                json_object *in = json_object_new_object();
                json_object_object_add(in, "mmap_size", u64(s->inflight.mmap_size));
                json_object_object_add(in, "mmap_offset", u64(s->inflight.mmap_offset));
                json_object_object_add(in, "num_queues", u64(s->inflight.num_queues));
                json_object_object_add(in, "queue_size", u64(s->inflight.queue_size));
                json_object_object_add(in, "fd", json_object_new_int(add_fd(s->inflight_fd, fds, &n)));
                json_object_object_add(o, "inflight", in);
        }
        if (s->iotlb.n > 0) {
                /* Packed, one string: the fd store writes the state on every change, and a
                 * json object per entry costs ~0.9 µs each (3.8 ms for the 4096 the shadow
                 * may hold; tests/bench/bench-state-json). */
                uint8_t *b = malloc((size_t) s->iotlb.n * IOTLB_PACKED_SIZE);
                if (b) {
                        for (unsigned i = 0; i < s->iotlb.n; i++) {
                                const IotlbEntry *e = &s->iotlb.entries[i];
                                uint8_t *p = b + (size_t) i * IOTLB_PACKED_SIZE;
                                put_le64(p, e->iova);
                                put_le64(p + 8, e->size);
                                put_le64(p + 16, e->uaddr);
                                p[24] = e->perm;
                        }
                        json_object_object_add(o, "iotlb_packed", hex(b, (size_t) s->iotlb.n * IOTLB_PACKED_SIZE));
                        free(b);
                }
        }
        if (s->log.fd >= 0) {
                json_object *lg = json_object_new_object();
                json_object_object_add(lg, "mmap_size", u64(s->log.region.mmap_size));
                json_object_object_add(lg, "mmap_offset", u64(s->log.region.mmap_offset));
                json_object_object_add(lg, "fd", json_object_new_int(add_fd(s->log.fd, fds, &n)));
                json_object_object_add(lg, "notify_fd", json_object_new_int(add_fd(s->log.notify_fd, fds, &n)));
                json_object_object_add(o, "dirty_log", lg);
        }
        json_object_object_add(o, "config", hex(s->config, sizeof(s->config)));
        json_object_object_add(o, "config_written", hex(s->config_written, sizeof(s->config_written)));

        add_opt_u64(be, "features", s->backend.features_known, s->backend.features);
        add_opt_u64(be, "protocol_features", s->backend.protocol_features_known, s->backend.protocol_features);
        add_opt_u64(be, "queue_num", s->backend.queue_num_known, s->backend.queue_num);
        add_opt_u64(be, "max_mem_slots", s->backend.max_mem_slots_known, s->backend.max_mem_slots);
        json_object_object_add(be, "config", hex(s->backend.config, sizeof(s->backend.config)));
        json_object_object_add(be, "config_known", hex(s->backend.config_known, sizeof(s->backend.config_known)));
        json_object_object_add(o, "backend", be);

        *ret = o;
        *ret_n_fds = n;
        return 0;
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EBADMSG;
}

static bool get_opt_u64(json_object *o, const char *key, uint64_t *ret) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !v)
                return false;
        *ret = json_object_get_uint64(v);
        return true;
}

static int get_hex(json_object *o, const char *key, uint8_t *out, size_t n) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
                return -EBADMSG;
        const char *s = json_object_get_string(v);
        if (strlen(s) != 2 * n)
                return -EBADMSG;
        for (size_t i = 0; i < n; i++) {
                unsigned b;
                if (sscanf(s + 2 * i, "%2x", &b) != 1)
                        return -EBADMSG;
                out[i] = (uint8_t) b;
        }
        return 0;
}

/* A copy of saved fd number idx; -1 for "set without an fd"; -EBADF when idx is bad. */
static int take_fd(json_object *o, const char *key, const int *fds, size_t n_fds) {
        json_object *v;
        if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_int))
                return -EBADF;
        int idx = json_object_get_int(v);
        if (idx == -1)
                return -1;
        if (idx < 0 || (size_t) idx >= n_fds)
                return -EBADF;
        int fd = fcntl(fds[idx], F_DUPFD_CLOEXEC, 3);
        return fd < 0 ? -EBADF : fd;
}

static int restore(Shadow *s, json_object *j, const int *fds, size_t n_fds, const char **ret_reason) {
        json_object *v, *a;
        uint64_t x = 0;

        if (!json_object_object_get_ex(j, "version", &v) || json_object_get_int(v) != 1)
                return fail(ret_reason, "unknown shadow version");
        s->owner = json_object_object_get_ex(j, "owner", &v) && json_object_get_boolean(v);
        if ((s->features_set = get_opt_u64(j, "features", &x)))
                s->features = x;
        if ((s->protocol_features_set = get_opt_u64(j, "protocol_features", &x)))
                s->protocol_features = x;
        if ((s->status_set = get_opt_u64(j, "status", &x)))
                s->status = (uint8_t) x;
        if ((s->mtu_set = get_opt_u64(j, "mtu", &x)))
                s->mtu = x;

        if (!json_object_object_get_ex(j, "memory", &a) || !json_object_is_type(a, json_type_array) ||
            json_object_array_length(a) > GUEST_MEMORY_MAX_SLOTS)
                return fail(ret_reason, "bad memory table");
        for (size_t i = 0; i < json_object_array_length(a); i++) {
                json_object *r = json_object_array_get_idx(a, i);
                VuMemRegion reg;
                if (!get_opt_u64(r, "guest_phys_addr", &reg.guest_phys_addr) ||
                    !get_opt_u64(r, "memory_size", &reg.memory_size) ||
                    !get_opt_u64(r, "userspace_addr", &reg.userspace_addr) ||
                    !get_opt_u64(r, "mmap_offset", &reg.mmap_offset))
                        return fail(ret_reason, "bad memory region");
                int fd = take_fd(r, "fd", fds, n_fds);
                if (fd < 0)
                        return fail(ret_reason, "memory region without its fd");
                int k = guest_memory_add(&s->memory, &reg, fd, ret_reason);
                safe_close(fd);
                if (k < 0)
                        return k;
        }
        s->memory_set = json_object_object_get_ex(j, "memory_set", &v) && json_object_get_boolean(v);
        s->memory_by_slots = json_object_object_get_ex(j, "memory_by_slots", &v) && json_object_get_boolean(v);

        if (!json_object_object_get_ex(j, "vrings", &a) || !json_object_is_type(a, json_type_array) ||
            json_object_array_length(a) > VU_MAX_VRINGS)
                return fail(ret_reason, "bad vrings");
        size_t n = json_object_array_length(a);
        if (n > 0) {
                s->vrings = calloc(n, sizeof(ShadowVring));
                if (!s->vrings)
                        return -ENOMEM;
                s->n_vrings = n;
                for (size_t i = 0; i < n; i++)
                        s->vrings[i] = (ShadowVring) { .kick_fd = -1, .call_fd = -1, .err_fd = -1 };
        }
        for (size_t i = 0; i < n; i++) {
                json_object *r = json_object_array_get_idx(a, i);
                ShadowVring *vr = &s->vrings[i];
                if ((vr->num_set = get_opt_u64(r, "num", &x)))
                        vr->num = (uint32_t) x;
                if ((vr->base_set = get_opt_u64(r, "base", &x)))
                        vr->base = (uint32_t) x;
                if (json_object_object_get_ex(r, "addr", &v)) {
                        vr->addr_set = true;
                        vr->addr.index = i;
                        x = 0;
                        (void) get_opt_u64(v, "flags", &x);
                        vr->addr.flags = (uint32_t) x;
                        if (!get_opt_u64(v, "desc", &vr->addr.desc_user_addr) ||
                            !get_opt_u64(v, "used", &vr->addr.used_user_addr) ||
                            !get_opt_u64(v, "avail", &vr->addr.avail_user_addr) ||
                            !get_opt_u64(v, "log", &vr->addr.log_guest_addr))
                                return fail(ret_reason, "bad vring address");
                }
                static const char *const keys[] = { "kick", "call", "err" };
                int *slots[] = { &vr->kick_fd, &vr->call_fd, &vr->err_fd };
                bool *set[] = { &vr->kick_set, &vr->call_set, &vr->err_set };
                for (int k = 0; k < 3; k++) {
                        if (!json_object_object_get_ex(r, keys[k], &v))
                                continue;
                        int fd = take_fd(r, keys[k], fds, n_fds);
                        if (fd == -EBADF)
                                return fail(ret_reason, "vring fd missing");
                        *slots[k] = fd;
                        *set[k] = true;
                }
                if (json_object_object_get_ex(r, "enabled", &v)) {
                        vr->enable_set = true;
                        vr->enabled = json_object_get_boolean(v);
                }
                vr->started = json_object_object_get_ex(r, "started", &v) && json_object_get_boolean(v);
                if ((vr->resume_valid = get_opt_u64(r, "resume", &x)))
                        vr->resume = (uint32_t) x;
        }
        if (json_object_object_get_ex(j, "backend_req_fd", &v)) {
                s->backend_req_fd = take_fd(j, "backend_req_fd", fds, n_fds);
                if (s->backend_req_fd < 0)
                        return fail(ret_reason, "back-end channel without its fd");
        }
        if (json_object_object_get_ex(j, "inflight", &v)) {
                uint64_t nq = 0, qs = 0;
                if (!get_opt_u64(v, "mmap_size", &s->inflight.mmap_size) ||
                    !get_opt_u64(v, "mmap_offset", &s->inflight.mmap_offset) ||
                    !get_opt_u64(v, "num_queues", &nq) || !get_opt_u64(v, "queue_size", &qs))
                        return fail(ret_reason, "bad inflight region");
                s->inflight.num_queues = (uint16_t) nq;
                s->inflight.queue_size = (uint16_t) qs;
                s->inflight_fd = take_fd(v, "fd", fds, n_fds);
                if (s->inflight_fd < 0)
                        return fail(ret_reason, "inflight region without its fd");
                s->inflight_set = true;
        }
        /* Taken as updates again: checked, and kept only where memory is (after the table). */
        if (json_object_object_get_ex(j, "iotlb_packed", &v)) {
                const char *h = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
                size_t len = h ? strlen(h) : 0;
                if (!h || len % (2 * IOTLB_PACKED_SIZE) || len / (2 * IOTLB_PACKED_SIZE) > IOTLB_SHADOW_MAX_ENTRIES)
                        return fail(ret_reason, "bad IOTLB");
                for (size_t i = 0; i < len / (2 * IOTLB_PACKED_SIZE); i++) {
                        uint8_t p[IOTLB_PACKED_SIZE];
                        for (size_t k = 0; k < IOTLB_PACKED_SIZE; k++) {
                                const char *c = h + 2 * (i * IOTLB_PACKED_SIZE + k);
                                int hi = nibble(c[0]), lo = nibble(c[1]);
                                if (hi < 0 || lo < 0)
                                        return fail(ret_reason, "bad IOTLB entry");
                                p[k] = (uint8_t) (hi << 4 | lo);
                        }
                        VuIotlbMsg m = { .type = VU_IOTLB_UPDATE, .iova = get_le64(p), .size = get_le64(p + 8),
                                         .uaddr = get_le64(p + 16), .perm = p[24] };
                        int k = iotlb_apply(&s->iotlb, &s->memory, &m, ret_reason);
                        if (k < 0 && k != -ERANGE && k != -ENOSPC)
                                return k;
                }
        }
        /* the form written before (an object per entry) */
        if (json_object_object_get_ex(j, "iotlb", &a)) {
                if (!json_object_is_type(a, json_type_array) || json_object_array_length(a) > IOTLB_SHADOW_MAX_ENTRIES)
                        return fail(ret_reason, "bad IOTLB");
                for (size_t i = 0; i < json_object_array_length(a); i++) {
                        json_object *e = json_object_array_get_idx(a, i);
                        VuIotlbMsg m = { .type = VU_IOTLB_UPDATE };
                        if (!get_opt_u64(e, "iova", &m.iova) || !get_opt_u64(e, "size", &m.size) ||
                            !get_opt_u64(e, "uaddr", &m.uaddr) || !get_opt_u64(e, "perm", &x) || x > 0xff)
                                return fail(ret_reason, "bad IOTLB entry");
                        m.perm = (uint8_t) x;
                        int k = iotlb_apply(&s->iotlb, &s->memory, &m, ret_reason);
                        if (k < 0 && k != -ERANGE && k != -ENOSPC)
                                return k;
                }
        }
        if (json_object_object_get_ex(j, "dirty_log", &v)) {
                if (!get_opt_u64(v, "mmap_size", &s->log.region.mmap_size) ||
                    !get_opt_u64(v, "mmap_offset", &s->log.region.mmap_offset))
                        return fail(ret_reason, "bad dirty log region");
                s->log.fd = take_fd(v, "fd", fds, n_fds);
                if (s->log.fd < 0)
                        return fail(ret_reason, "dirty log without its fd");
                s->log.notify_fd = take_fd(v, "notify_fd", fds, n_fds);
                if (s->log.notify_fd == -EBADF)
                        return fail(ret_reason, "dirty log eventfd missing");
        }
        if (get_hex(j, "config", s->config, sizeof(s->config)) < 0 ||
            get_hex(j, "config_written", s->config_written, sizeof(s->config_written)) < 0)
                return fail(ret_reason, "bad config bytes");

        if (!json_object_object_get_ex(j, "backend", &v))
                return fail(ret_reason, "no back-end cache");
        BackendCache *b = &s->backend;
        b->features_known = get_opt_u64(v, "features", &b->features);
        b->protocol_features_known = get_opt_u64(v, "protocol_features", &b->protocol_features);
        b->queue_num_known = get_opt_u64(v, "queue_num", &b->queue_num);
        b->max_mem_slots_known = get_opt_u64(v, "max_mem_slots", &b->max_mem_slots);
        if (get_hex(v, "config", b->config, sizeof(b->config)) < 0 ||
            get_hex(v, "config_known", b->config_known, sizeof(b->config_known)) < 0)
                return fail(ret_reason, "bad back-end config bytes");
        return 0;
}

int shadow_from_json(Shadow *s, json_object *j, const int *fds, size_t n_fds, const char **ret_reason) {
        int r = restore(s, j, fds, n_fds, ret_reason);
        if (r < 0) {
                shadow_reset(s);
                s->backend = (BackendCache) {};
        }
        return r;
}
