/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd-util.h"
#include "macro.h"
#include "shadow.h"
#include "shadow-json.h"
#include "tests.h"

#define MEM_SIZE   (1u << 20)
#define MEM_UADDR  UINT64_C(0x7f0000000000)     /* where the "front-end" has its memory */
#define RING_NUM   256u

static uint64_t desc_addr(unsigned i)  { return MEM_UADDR + 0x10000 * (i + 1); }
static uint64_t avail_addr(unsigned i) { return desc_addr(i) + 16 * RING_NUM; }
static uint64_t used_addr(unsigned i)  { return desc_addr(i) + 0x8000; }

typedef struct Fixture {
        Shadow s;
        int memfd;
        uint8_t *mem;   /* the test's own view of guest memory */
} Fixture;

static void fixture_init(Fixture *f, uint64_t be_features, uint64_t be_pf) {
        shadow_init(&f->s);
        shadow_record_backend(&f->s, VU_GET_FEATURES, be_features);
        shadow_record_backend(&f->s, VU_GET_PROTOCOL_FEATURES, be_pf);
        f->memfd = memfd_create("guest", MFD_CLOEXEC);
        ASSERT(f->memfd >= 0);
        ASSERT(ftruncate(f->memfd, MEM_SIZE) == 0);
        f->mem = mmap(NULL, MEM_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f->memfd, 0);
        ASSERT(f->mem != MAP_FAILED);
}

static void fixture_done(Fixture *f) {
        shadow_done(&f->s);
        munmap(f->mem, MEM_SIZE);
        close(f->memfd);
}

static void set_used_idx(Fixture *f, unsigned ring, uint16_t idx) {
        uint16_t *used = (uint16_t *) (f->mem + (used_addr(ring) - MEM_UADDR));
        used[1] = idx;
}

static int apply(Fixture *f, VuMsg *m) {
        const char *reason = NULL;
        ASSERT_EQ(vu_msg_check_request(m, &reason), 0);
        int r = shadow_apply(&f->s, m, &reason);
        vu_msg_close_fds(m);
        return r;
}

static void apply_ok(Fixture *f, VuMsg *m) {
        ASSERT_EQ(apply(f, m), 0);
}

static void send_u64(Fixture *f, VuRequest req, uint64_t v) {
        VuMsg m;
        vu_msg_init_u64(&m, req, v);
        apply_ok(f, &m);
}

static void send_state(Fixture *f, VuRequest req, uint32_t index, uint32_t num) {
        VuMsg m;
        vu_msg_init_state(&m, req, index, num);
        apply_ok(f, &m);
}

static void send_plain(Fixture *f, VuRequest req) {
        VuMsg m;
        vu_msg_init(&m, req, 0);
        apply_ok(f, &m);
}

static void send_file(Fixture *f, VuRequest req, unsigned index) {
        VuMsg m;
        vu_msg_init_u64(&m, req, index);
        m.fds[m.n_fds++] = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        apply_ok(f, &m);
}

static void mem_table_msg(Fixture *f, VuMsg *m) {
        vu_msg_init(m, VU_SET_MEM_TABLE, 0);
        m->payload.memory.nregions = 1;
        m->payload.memory.regions[0] = (VuMemRegion) { 0, MEM_SIZE, MEM_UADDR, 0 };
        m->hdr.size = 8 + sizeof(VuMemRegion);
        ASSERT_EQ(vu_msg_add_fd_dup(m, f->memfd), 0);
}

static void send_mem_table(Fixture *f) {
        VuMsg m;
        mem_table_msg(f, &m);
        apply_ok(f, &m);
}

static void send_addr(Fixture *f, unsigned i) {
        VuMsg m;
        vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
        m.hdr.size = sizeof(VuVringAddr);
        m.payload.addr = (VuVringAddr) { .index = i, .desc_user_addr = desc_addr(i),
                                         .avail_user_addr = avail_addr(i), .used_user_addr = used_addr(i) };
        apply_ok(f, &m);
}

#define NET_FEATURES (VU_BIT(15) | VU_BIT(28) | VU_BIT(VU_F_PROTOCOL_FEATURES) | VU_BIT(32) | VU_BIT(35))
#define DPDK_PF (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) | VU_BIT(VU_PF_STATUS))

/* What DPDK 22.11 virtio-user sends (seen on the wire through vhost-recond). */
static void dpdk_virtio_user_setup(Fixture *f) {
        send_plain(f, VU_SET_OWNER);
        send_u64(f, VU_SET_PROTOCOL_FEATURES, DPDK_PF);
        send_file(f, VU_SET_VRING_CALL, 0);
        send_file(f, VU_SET_VRING_CALL, 1);
        send_u64(f, VU_SET_FEATURES, NET_FEATURES);
        send_u64(f, VU_SET_STATUS, VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_FEATURES_OK);
        send_mem_table(f);
        for (unsigned i = 0; i < 2; i++) {
                send_state(f, VU_SET_VRING_NUM, i, RING_NUM);
                send_state(f, VU_SET_VRING_BASE, i, 0);
                send_addr(f, i);
                send_file(f, VU_SET_VRING_KICK, i);
        }
        send_state(f, VU_SET_VRING_ENABLE, 0, 1);
        send_state(f, VU_SET_VRING_ENABLE, 1, 1);
        send_u64(f, VU_SET_STATUS, 0xf);
}

typedef struct Expect {
        uint32_t request;
        uint32_t index;         /* vring index, where there is one */
        uint64_t value;         /* u64 payload, or vring state num; ~0: not checked */
        unsigned fds;
} Expect;

#define ANY UINT64_MAX

static void check_replay(const VuMsgList *l, const Expect *e, size_t n, bool reply_ack) {
        ASSERT_EQ(l->n, n);
        for (size_t i = 0; i < n; i++) {
                const VuMsg *m = &l->msgs[i];
                const char *reason = NULL;
                fprintf(stderr, "   %zu: %s\n", i, vu_request_to_string(m->hdr.request));
                ASSERT_EQ(m->hdr.request, e[i].request);
                ASSERT_EQ(m->n_fds, e[i].fds);
                ASSERT_EQ(vu_msg_check_request(m, &reason), 0);
                uint32_t index;
                if (vu_msg_vring_index(m, &index))
                        ASSERT_EQ(index, e[i].index);
                if (e[i].value != ANY) {
                        uint32_t r = m->hdr.request;
                        if (r == VU_SET_VRING_NUM || r == VU_SET_VRING_BASE || r == VU_SET_VRING_ENABLE)
                                ASSERT_EQ(m->payload.state.num, e[i].value);
                        else
                                ASSERT_EQ(m->payload.u64, e[i].value);
                }
                bool want_ack = reply_ack && m->hdr.request != VU_SET_PROTOCOL_FEATURES &&
                                !vu_request_has_reply(m->hdr.request);
                ASSERT_EQ(vu_msg_needs_reply(m), want_ack);
        }
}

static void test_dpdk_sequence_replay(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;

        fixture_init(&f, NET_FEATURES | VU_BIT(VU_F_LOG_ALL), DPDK_PF | VU_BIT(VU_PF_LOG_SHMFD));
        dpdk_virtio_user_setup(&f);
        /* the back-end crashed after moving the rings on */
        set_used_idx(&f, 0, 25344);
        set_used_idx(&f, 1, 25376);

        uint64_t bpf = shadow_backend_protocol_features(&f.s, DPDK_PF);
        ASSERT_EQ(bpf, DPDK_PF);
        ASSERT_EQ(shadow_build_replay(&f.s, bpf, &l, &reason), 0);
        const Expect e[] = {
                { VU_SET_PROTOCOL_FEATURES, 0, DPDK_PF, 0 },
                { VU_GET_QUEUE_NUM, 0, ANY, 0 },
                { VU_SET_FEATURES, 0, NET_FEATURES, 0 },
                { VU_SET_MEM_TABLE, 0, ANY, 1 },
                { VU_SET_VRING_NUM, 0, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 0, 25344, 0 },
                { VU_SET_VRING_ADDR, 0, ANY, 0 },
                { VU_SET_VRING_CALL, 0, 0, 1 },
                { VU_SET_VRING_KICK, 0, 0, 1 },
                { VU_SET_VRING_NUM, 1, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 1, 25376, 0 },
                { VU_SET_VRING_ADDR, 1, ANY, 0 },
                { VU_SET_VRING_CALL, 1, 1, 1 },
                { VU_SET_VRING_KICK, 1, 1, 1 },
                { VU_SET_VRING_ENABLE, 0, 1, 0 },
                { VU_SET_VRING_ENABLE, 1, 1, 0 },
                { VU_SET_STATUS, 0, 0xf, 0 },
        };
        check_replay(&l, e, ELEMENTSOF(e), true);
        /* the memory table hands on the front-end's memory as it is */
        ASSERT_EQ(l.msgs[3].payload.memory.regions[0].userspace_addr, MEM_UADDR);
        ASSERT_EQ(l.msgs[6].payload.addr.used_user_addr, used_addr(0));
        vu_msg_list_clear(&l);

        /* the back-end's LOG_ALL and LOG_SHMFD are offered on (live migration), nothing else
         * beyond what can be replayed */
        uint64_t v;
        ASSERT(shadow_frontend_features(&f.s, &v));
        ASSERT_EQ(v, NET_FEATURES | VU_BIT(VU_F_LOG_ALL));
        ASSERT(shadow_frontend_protocol_features(&f.s, &v));
        ASSERT_EQ(v, DPDK_PF | VU_BIT(VU_PF_LOG_SHMFD));
        fixture_done(&f);
}

/* QEMU 7.2 vhost-user-net without REPLY_ACK and STATUS: a GET_FEATURES barrier closes it. */
static void test_qemu_sequence_replay(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;
        const uint64_t pf = VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_MTU);

        fixture_init(&f, NET_FEATURES, pf | VU_BIT(VU_PF_REPLY_ACK));
        send_plain(&f, VU_SET_OWNER);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, pf);
        send_u64(&f, VU_NET_SET_MTU, 1500);
        for (unsigned i = 0; i < 2; i++)
                send_file(&f, VU_SET_VRING_CALL, i);
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        send_mem_table(&f);
        for (unsigned i = 0; i < 2; i++) {
                send_state(&f, VU_SET_VRING_NUM, i, RING_NUM);
                send_state(&f, VU_SET_VRING_BASE, i, 0);
                send_addr(&f, i);
                send_file(&f, VU_SET_VRING_KICK, i);
                send_file(&f, VU_SET_VRING_CALL, i);
        }
        send_state(&f, VU_SET_VRING_ENABLE, 0, 1);
        send_state(&f, VU_SET_VRING_ENABLE, 1, 1);
        set_used_idx(&f, 0, 7);
        set_used_idx(&f, 1, 9);

        /* the front-end did not take REPLY_ACK; the daemon asks for it on its own behalf */
        uint64_t bpf = shadow_backend_protocol_features(&f.s, pf | VU_BIT(VU_PF_REPLY_ACK));
        ASSERT_EQ(bpf, pf | VU_BIT(VU_PF_REPLY_ACK));
        ASSERT_EQ(shadow_build_replay(&f.s, pf, &l, &reason), 0);
        const Expect e[] = {
                { VU_SET_PROTOCOL_FEATURES, 0, pf, 0 },
                { VU_GET_QUEUE_NUM, 0, ANY, 0 },
                { VU_SET_FEATURES, 0, NET_FEATURES, 0 },
                { VU_SET_MEM_TABLE, 0, ANY, 1 },
                { VU_NET_SET_MTU, 0, 1500, 0 },
                { VU_SET_VRING_NUM, 0, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 0, 7, 0 },
                { VU_SET_VRING_ADDR, 0, ANY, 0 },
                { VU_SET_VRING_CALL, 0, 0, 1 },
                { VU_SET_VRING_KICK, 0, 0, 1 },
                { VU_SET_VRING_NUM, 1, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 1, 9, 0 },
                { VU_SET_VRING_ADDR, 1, ANY, 0 },
                { VU_SET_VRING_CALL, 1, 1, 1 },
                { VU_SET_VRING_KICK, 1, 1, 1 },
                { VU_SET_VRING_ENABLE, 0, 1, 0 },
                { VU_SET_VRING_ENABLE, 1, 1, 0 },
                { VU_GET_FEATURES, 0, ANY, 0 },
        };
        check_replay(&l, e, ELEMENTSOF(e), false);
        vu_msg_list_clear(&l);
        fixture_done(&f);
}

/* A front-end that never took protocol features (legacy, or PROTOCOL_FEATURES not acked):
 * the replay sets none, so it may not ask for REPLY_ACK either, even from a back-end that
 * offers it: the back-end would never ack, and the replay would hang until the timeout. */
static void test_legacy_replay_without_protocol_features(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;
        const uint64_t features = NET_FEATURES & ~VU_BIT(VU_F_PROTOCOL_FEATURES);

        fixture_init(&f, NET_FEATURES, DPDK_PF | VU_BIT(VU_PF_REPLY_ACK));
        send_plain(&f, VU_SET_OWNER);
        send_u64(&f, VU_SET_FEATURES, features);
        send_mem_table(&f);
        send_state(&f, VU_SET_VRING_NUM, 0, RING_NUM);
        send_state(&f, VU_SET_VRING_BASE, 0, 0);
        send_addr(&f, 0);
        send_file(&f, VU_SET_VRING_CALL, 0);
        send_file(&f, VU_SET_VRING_KICK, 0);

        uint64_t bpf = shadow_backend_protocol_features(&f.s, DPDK_PF | VU_BIT(VU_PF_REPLY_ACK));
        ASSERT_EQ(bpf, 0);
        ASSERT_EQ(shadow_build_replay(&f.s, bpf, &l, &reason), 0);
        const Expect e[] = {
                { VU_SET_FEATURES, 0, features, 0 },
                { VU_SET_MEM_TABLE, 0, ANY, 1 },
                { VU_SET_VRING_NUM, 0, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 0, 0, 0 },
                { VU_SET_VRING_ADDR, 0, ANY, 0 },
                { VU_SET_VRING_CALL, 0, 0, 1 },
                { VU_SET_VRING_KICK, 0, 0, 1 },
                { VU_GET_FEATURES, 0, ANY, 0 },
        };
        check_replay(&l, e, ELEMENTSOF(e), false);
        vu_msg_list_clear(&l);
        fixture_done(&f);

        /* no device at all: nothing to replay, and no barrier to wait for */
        fixture_init(&f, NET_FEATURES, DPDK_PF | VU_BIT(VU_PF_REPLY_ACK));
        ASSERT_EQ(shadow_build_replay(&f.s, shadow_backend_protocol_features(&f.s, DPDK_PF), &l, &reason), 0);
        ASSERT_EQ(l.n, 0);
        vu_msg_list_clear(&l);
        fixture_done(&f);
}

static void test_resume_index(void) {
        Fixture f;
        VuMsg req, reply;
        uint32_t base;
        bool from_memory;

        fixture_init(&f, NET_FEATURES, DPDK_PF);
        dpdk_virtio_user_setup(&f);

        /* after a crash: the used index in guest memory */
        set_used_idx(&f, 0, 4242);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, &from_memory), 0);
        ASSERT_EQ(base, 4242);
        ASSERT(from_memory);
        /* it wraps as a u16 does */
        set_used_idx(&f, 0, 65535);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, NULL), 0);
        ASSERT_EQ(base, 65535);

        /* a clean stop: the index the back-end answered wins over guest memory */
        vu_msg_init_state(&req, VU_GET_VRING_BASE, 1, 0);
        vu_msg_init_state(&reply, VU_GET_VRING_BASE, 1, 1000);
        reply.hdr.flags |= VU_FLAG_REPLY;
        shadow_record_reply(&f.s, &req, &reply);
        set_used_idx(&f, 1, 990);
        ASSERT_EQ(shadow_resume_index(&f.s, 1, &base, &from_memory), 0);
        ASSERT_EQ(base, 1000);
        ASSERT(!from_memory);
        ASSERT(!f.s.vrings[1].started);

        /* with no back-end, GET_VRING_BASE is answered from guest memory and stops the ring */
        set_used_idx(&f, 0, 31);
        vu_msg_init_state(&req, VU_GET_VRING_BASE, 0, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT(vu_msg_is_reply(&reply));
        ASSERT_EQ(reply.payload.state.index, 0);
        ASSERT_EQ(reply.payload.state.num, 31);
        ASSERT(!f.s.vrings[0].started);

        /* stopped rings are replayed without a kick, at the index where they stopped */
        VuMsgList l;
        const char *reason;
        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &l, &reason), 0);
        for (size_t i = 0; i < l.n; i++) {
                ASSERT(l.msgs[i].hdr.request != VU_SET_VRING_KICK);
                if (l.msgs[i].hdr.request == VU_SET_VRING_BASE)
                        ASSERT_EQ(l.msgs[i].payload.state.num, l.msgs[i].payload.state.index == 0 ? 31 : 1000);
        }
        vu_msg_list_clear(&l);

        /* a new start by the front-end: the new base and kick take over */
        send_state(&f, VU_SET_VRING_BASE, 0, 31);
        send_file(&f, VU_SET_VRING_KICK, 0);
        set_used_idx(&f, 0, 40);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, NULL), 0);
        ASSERT_EQ(base, 40);
        fixture_done(&f);
}

static void set_desc_flags(Fixture *f, unsigned ring, unsigned i, uint16_t flags) {
        uint16_t *desc = (uint16_t *) (f->mem + (desc_addr(ring) - MEM_UADDR) + 16 * i + 14);
        *desc = flags;
}

#define AVAIL (1u << 7)
#define USED (1u << 15)
#define NEXT 1u

static bool recover(GuestMemory *m, unsigned ring, uint32_t num, bool complete, uint32_t *st, unsigned *completed) {
        bool certain = false;
        ASSERT_EQ(vring_packed_recover(m, desc_addr(ring), num, complete ? VRING_PACKED_COMPLETE : 0, st, &certain,
                                       completed), 0);
        return certain;
}

/* A packed ring driven as DPDK 22.11 drives one: the virtio PMD (driver) makes single-
 * descriptor buffers available in order and takes used ones back in order; vhost (device)
 * uses them in bursts and writes the flags of a burst's first descriptor last
 * (vhost_flush_dequeue_shadow_packed, vhost_flush_enqueue_shadow_packed), or, for an
 * enqueue batch, in order (vhost_flush_enqueue_batch_packed). Positions are absolute;
 * lap 0 has wrap counter 1. */
typedef struct PackedSim {
        uint8_t *desc;
        uint32_t num;
        uint32_t avail, used, taken;    /* made available, used by the device, taken back */
} PackedSim;

static bool sim_wrap(const PackedSim *p, uint32_t n) {
        return ((n / p->num) & 1) == 0;
}

static uint16_t *sim_flags(const PackedSim *p, uint32_t n) {
        return (uint16_t *) (p->desc + 16 * (n % p->num) + 14);
}

static void sim_init(PackedSim *p, Fixture *f, unsigned ring, uint32_t num) {
        *p = (PackedSim) { .desc = f->mem + (desc_addr(ring) - MEM_UADDR), .num = num };
        memset(p->desc, 0, 16 * num);
}

static void sim_make_avail(PackedSim *p, uint32_t k) {
        for (uint32_t i = 0; i < k; i++) {
                ASSERT(p->avail - p->taken < p->num);
                uint32_t n = p->avail++;
                *(uint16_t *) (p->desc + 16 * (n % p->num) + 12) = n % p->num;         /* id */
                *sim_flags(p, n) = sim_wrap(p, n) ? AVAIL : USED;
        }
}

static void sim_fill(PackedSim *p) {
        sim_make_avail(p, p->num - (p->avail - p->taken));
}

static void sim_write_used(PackedSim *p, uint32_t n) {
        *sim_flags(p, n) = sim_wrap(p, n) ? AVAIL | USED : 0;
}

/* A burst of k: only `written` of its flag writes happen (a SIGKILL after them). The device's
 * own used index moves past the whole burst either way. */
static void sim_burst(PackedSim *p, uint32_t k, uint32_t written, bool head_last) {
        ASSERT(p->used + k <= p->avail && written <= k);
        for (uint32_t j = 0; j < written; j++)
                sim_write_used(p, head_last ? (j + 1 < k ? p->used + 1 + j : p->used) : p->used + j);
        p->used += k;
}

static void sim_take_used(PackedSim *p) {
        while (p->taken < p->avail) {
                uint16_t fl = *sim_flags(p, p->taken);
                bool w = sim_wrap(p, p->taken);
                if (!!(fl & AVAIL) != w || !!(fl & USED) != w)
                        break;
                p->taken++;
        }
}

/* A new device started at `state` (as DPDK's SET_VRING_BASE takes it) against the driver:
 * how many buffers the driver gets back in `rounds` rounds of fill, use all, take back. */
static uint32_t sim_run_from(PackedSim *p, uint32_t state, unsigned rounds) {
        uint32_t pos = state & 0x7fff, taken = p->taken;
        bool wrap = state >> 15;
        for (unsigned r = 0; r < rounds; r++) {
                sim_take_used(p);
                sim_fill(p);
                for (;;) {
                        uint16_t *fl = (uint16_t *) (p->desc + 16 * pos + 14);
                        if (!!(*fl & AVAIL) != wrap || !!(*fl & USED) == wrap)
                                break;          /* DPDK's desc_is_avail() */
                        *fl = wrap ? AVAIL | USED : 0;
                        if (++pos == p->num) {
                                pos = 0;
                                wrap = !wrap;
                        }
                }
                sim_take_used(p);
        }
        return p->taken - taken;
}

static uint32_t sim_state(const PackedSim *p, uint32_t n) {
        return (n % p->num) | ((uint32_t) sim_wrap(p, n) << 15);
}

/* Steady traffic for a while, then a burst cut by a SIGKILL; the driver fills the ring while
 * no device runs, or not. */
static void check_cut_burst(Fixture *f, uint32_t num, uint32_t history, uint32_t k, uint32_t written,
                            bool head_last, bool fill) {
        GuestMemory *m = &f->s.memory;
        PackedSim p;
        uint32_t st, st2;
        unsigned completed;

        sim_init(&p, f, 1, num);
        while (p.used < history) {
                sim_take_used(&p);
                sim_fill(&p);
                uint32_t burst = MIN(p.avail - p.used, MIN(32u, history - p.used));
                sim_burst(&p, burst, burst, true);
        }
        sim_take_used(&p);
        sim_fill(&p);
        if (k > p.avail - p.used)
                k = p.avail - p.used;
        if (written > k)
                written = k;
        uint32_t before = p.used;
        sim_burst(&p, k, written, head_last);
        sim_take_used(&p);
        if (fill)
                sim_fill(&p);

        /* where the device must resume: past what it marked used, the head of the burst
         * counted once anything after it is; what it processed but did not mark is processed
         * again (no flag of the burst written; the rest of it, or of an in-order batch) */
        uint32_t expect = before + (head_last && written > 0 ? MIN(written + 1, k) : written);
        bool hole = head_last && written > 0 && written < k;

        bool certain = recover(m, 1, num, false, &st, &completed);
        ASSERT_EQ(certain, !hole);
        ASSERT_EQ(completed, 0u);
        if (hole) {
                /* the head of the cut burst: resuming there, as the first flip of the USED flags
                 * did, stalls the ring; resuming past it without completing it stalls too */
                PackedSim copy = p;
                uint8_t saved[16 * 2048];
                memcpy(saved, p.desc, 16 * num);
                ASSERT(sim_run_from(&copy, sim_state(&p, before), 4) <= k);
                memcpy(p.desc, saved, 16 * num);
                copy = p;
                ASSERT_EQ(sim_run_from(&copy, st, 4), 0u);
                memcpy(p.desc, saved, 16 * num);
        }
        ASSERT_EQ(st, sim_state(&p, expect));
        certain = recover(m, 1, num, true, &st, &completed);
        ASSERT(certain);
        ASSERT_EQ(completed, hole ? 1u : 0u);
        ASSERT_EQ(st, sim_state(&p, expect));
        /* completed: the same answer again, nothing more to complete */
        ASSERT(recover(m, 1, num, true, &st2, &completed));
        ASSERT_EQ(st2, st);
        ASSERT_EQ(completed, 0u);
        /* and the ring runs: the driver gets back what it gives, lap after lap */
        ASSERT(sim_run_from(&p, st, 4) >= 3 * num);
}

/* Packed rings: the device's position is the start of the pending run before the driver's
 * avail position; a burst whose head DPDK had not yet marked used is completed. */
static void test_packed_resume_index(void) {
        uint32_t st;
        unsigned completed;
        Fixture f;

        fixture_init(&f, NET_FEATURES | VU_BIT(VIRTIO_F_RING_PACKED), DPDK_PF);
        GuestMemory *m = &f.s.memory;
        send_mem_table(&f);

        /* a fresh ring: lap 1 (wrap 1), position 0 */
        ASSERT(recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x8000);
        /* the driver made 5 available (AVAIL=1, USED=0), the device used 3 (AVAIL=USED=1) */
        for (unsigned i = 0; i < 5; i++)
                set_desc_flags(&f, 0, i, AVAIL);
        for (unsigned i = 0; i < 3; i++)
                set_desc_flags(&f, 0, i, AVAIL | USED);
        ASSERT(recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x8003);
        /* the driver made 5-7 available, then took 0-2 back and made them available for lap 2
         * (AVAIL=0, USED=1): a full ring, the oldest at 3 */
        for (unsigned i = 5; i < 8; i++)
                set_desc_flags(&f, 0, i, AVAIL);
        for (unsigned i = 0; i < 3; i++)
                set_desc_flags(&f, 0, i, USED);
        ASSERT(recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x8003);
        /* the device went round: all 8 used in lap 1 (AVAIL=USED=1), nothing pending */
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, AVAIL | USED);
        ASSERT(recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x0000);          /* the end of lap 1 is the start of lap 2 */
        /* 2 made available and used in lap 2 (AVAIL=USED=0) */
        set_desc_flags(&f, 0, 0, 0);
        set_desc_flags(&f, 0, 1, 0);
        ASSERT(recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x0002);

        /* a chain of two at 0-1 used as one element (its used flags keep NEXT, as DPDK's
         * dequeue keeps them): the tail at 1 is no hole to resume at, and chains make any
         * answer less than certain */
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, AVAIL);
        set_desc_flags(&f, 0, 0, AVAIL | USED | NEXT);
        set_desc_flags(&f, 0, 2, AVAIL | USED);
        ASSERT(!recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x8003);
        /* a chain used just before the device's position: its tails are not where it resumes */
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, AVAIL);
        set_desc_flags(&f, 0, 0, AVAIL | USED);
        set_desc_flags(&f, 0, 1, AVAIL | USED | NEXT);
        set_desc_flags(&f, 0, 2, AVAIL | NEXT);
        ASSERT(!recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(st, 0x8004);
        /* the driver in the middle of writing a chain at 5-6, its head last: its AVAIL bits
         * change lap three times; the first flip of the USED flags is taken, not certain */
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, i < 5 ? AVAIL | USED : 0);
        set_desc_flags(&f, 0, 6, AVAIL);
        ASSERT(!recover(m, 0, 8, true, &st, &completed));
        ASSERT_EQ(completed, 0u);
        ASSERT_EQ(st, 0x8005);

        /* IN_ORDER: DPDK's in-order dequeue writes one used descriptor for a batch of 4 (the
         * first position, the last id) and never the other three: nothing is completed, and
         * no answer is certain, holes or not */
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, i == 0 ? AVAIL | USED : AVAIL);
        bool certain = true;
        ASSERT_EQ(vring_packed_recover(m, desc_addr(0), 8, VRING_PACKED_COMPLETE | VRING_PACKED_IN_ORDER, &st,
                                       &certain, &completed), 0);
        ASSERT(!certain);
        ASSERT_EQ(completed, 0u);
        set_desc_flags(&f, 0, 4, AVAIL | USED);         /* a second batch at 4-7: 1-3 are holes */
        ASSERT_EQ(vring_packed_recover(m, desc_addr(0), 8, VRING_PACKED_COMPLETE | VRING_PACKED_IN_ORDER, &st,
                                       &certain, &completed), 0);
        ASSERT(!certain);
        ASSERT_EQ(completed, 0u);
        ASSERT_EQ(*(uint16_t *) (f.mem + (desc_addr(0) - MEM_UADDR) + 16 * 1 + 14), AVAIL);

        /* rings built as DPDK builds them, cut in the middle of a burst */
        static const uint32_t sizes[] = { 8, 256, 2048 };
        for (unsigned s = 0; s < ELEMENTSOF(sizes); s++) {
                uint32_t n = sizes[s];
                uint32_t histories[] = { 0, 3, n - 2, n, 2 * n + n / 2, 3 * n - 1 };
                for (unsigned h = 0; h < ELEMENTSOF(histories); h++)
                        for (uint32_t k = 1; k <= MIN(n, 32u); k += (k < 6 ? 1 : 13))
                                for (uint32_t w = 0; w <= k; w++)
                                        for (unsigned mode = 0; mode < 4; mode++)
                                                check_cut_burst(&f, n, histories[h], k, w, mode & 1, mode & 2);
        }
        /* a burst whose head is the last descriptor of a lap and whose rest wraps to 0 */
        check_cut_burst(&f, 8, 7, 4, 2, true, false);
        check_cut_burst(&f, 8, 15, 8, 7, true, true);

        /* through the shadow: a started packed ring resumes from guest memory (DPDK's
         * virtio-user with in_order=0: IN_ORDER not acked) */
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, DPDK_PF);
        send_u64(&f, VU_SET_FEATURES, (NET_FEATURES & ~VU_BIT(VIRTIO_F_IN_ORDER)) | VU_BIT(VIRTIO_F_RING_PACKED));
        send_state(&f, VU_SET_VRING_NUM, 0, 8);
        send_state(&f, VU_SET_VRING_BASE, 0, 0x8000);
        send_addr(&f, 0);
        send_file(&f, VU_SET_VRING_KICK, 0);
        uint32_t base;
        bool from_memory;
        for (unsigned i = 0; i < 8; i++)                /* the driver in the middle of a chain, as above */
                set_desc_flags(&f, 0, i, i < 5 ? AVAIL | USED : i == 6 ? AVAIL : 0);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, &from_memory), 1);      /* a best guess */
        ASSERT(from_memory);
        ASSERT_EQ(base, 0x8005);
        for (unsigned i = 0; i < 8; i++)
                set_desc_flags(&f, 0, i, i < 6 ? AVAIL | USED : AVAIL);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, &from_memory), 0);
        ASSERT_EQ(base, 0x8006);
        /* the head of a burst at 3 not marked used: completed in guest memory on the way */
        set_desc_flags(&f, 0, 3, AVAIL);
        ASSERT_EQ(shadow_resume_index_full(&f.s, 0, &base, &from_memory, &completed), 0);
        ASSERT_EQ(base, 0x8006);
        ASSERT_EQ(completed, 1u);
        ASSERT_EQ(*(uint16_t *) (f.mem + (desc_addr(0) - MEM_UADDR) + 16 * 3 + 14), AVAIL | USED);
        /* with IN_ORDER acked the same ring is a best guess, and a hole is left alone */
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES | VU_BIT(VIRTIO_F_RING_PACKED));
        set_desc_flags(&f, 0, 3, AVAIL);
        ASSERT_EQ(shadow_resume_index_full(&f.s, 0, &base, &from_memory, &completed), 1);
        ASSERT_EQ(completed, 0u);
        ASSERT_EQ(*(uint16_t *) (f.mem + (desc_addr(0) - MEM_UADDR) + 16 * 3 + 14), AVAIL);
        /* a packed ring of any size (not only powers of two) */
        send_state(&f, VU_SET_VRING_NUM, 1, 100);
        fixture_done(&f);
}

static void test_answers_without_backend(void) {
        Fixture f;
        VuMsg req, reply;

        shadow_init(&f.s);
        /* nothing known yet: only a back-end can answer GET_FEATURES */
        vu_msg_init(&req, VU_GET_FEATURES, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);
        shadow_done(&f.s);

        fixture_init(&f, NET_FEATURES, DPDK_PF | VU_BIT(VU_PF_CONFIG));
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.payload.u64, NET_FEATURES);
        dpdk_virtio_user_setup(&f);

        vu_msg_init(&req, VU_GET_STATUS, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.payload.u64, 0xf);
        ASSERT_EQ(reply.hdr.flags, VU_VERSION | VU_FLAG_REPLY);

        /* a REPLY_ACK for a request the shadow took */
        vu_msg_init_u64(&req, VU_SET_STATUS, 0xf);
        req.hdr.flags |= VU_FLAG_NEED_REPLY;
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.hdr.request, VU_SET_STATUS);
        ASSERT_EQ(reply.payload.u64, 0);

        /* queue count and config: only once a back-end has told them */
        vu_msg_init(&req, VU_GET_QUEUE_NUM, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);
        shadow_record_backend(&f.s, VU_GET_QUEUE_NUM, 8);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.payload.u64, 8);
        fixture_done(&f);
}

static void test_config_cache_and_replay(void) {
        Fixture f;
        VuMsg req, reply;
        VuMsgList l;
        const char *reason;
        const uint64_t pf = VU_BIT(VU_PF_CONFIG) | VU_BIT(VU_PF_REPLY_ACK);

        fixture_init(&f, VU_BIT(VU_F_PROTOCOL_FEATURES) | VU_BIT(32), pf);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, pf);

        vu_msg_init(&req, VU_GET_CONFIG, 0);
        req.payload.config = (VuConfig) { .offset = 0, .size = 8 };
        req.hdr.size = VU_CONFIG_HDR_SIZE + 8;
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);
        /* a back-end answered once: cached for answers while it is away */
        reply = req;
        reply.hdr.flags |= VU_FLAG_REPLY;
        memcpy(reply.payload.config.region, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
        shadow_record_reply(&f.s, &req, &reply);
        memset(&reply, 0, sizeof(reply));
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT(memcmp(reply.payload.config.region, "\x01\x02\x03\x04\x05\x06\x07\x08", 8) == 0);

        /* what the front-end writes is replayed and read back */
        VuMsg m;
        vu_msg_init(&m, VU_SET_CONFIG, 0);
        m.payload.config = (VuConfig) { .offset = 2, .size = 2 };
        memcpy(m.payload.config.region, "\xaa\xbb", 2);
        m.hdr.size = VU_CONFIG_HDR_SIZE + 2;
        apply_ok(&f, &m);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT(memcmp(reply.payload.config.region, "\x01\x02\xaa\xbb\x05\x06\x07\x08", 8) == 0);
        ASSERT_EQ(shadow_build_replay(&f.s, pf, &l, &reason), 0);
        ASSERT_EQ(l.n, 2);
        ASSERT_EQ(l.msgs[1].hdr.request, VU_SET_CONFIG);
        ASSERT_EQ(l.msgs[1].payload.config.offset, 2);
        ASSERT_EQ(l.msgs[1].payload.config.size, 2);
        vu_msg_list_clear(&l);
        fixture_done(&f);
}

static void expect_refused(Fixture *f, VuMsg *m, const char *why) {
        const char *reason = NULL;
        ASSERT(shadow_apply(&f->s, m, &reason) < 0);
        ASSERT_CONTAINS(reason, why);
        vu_msg_close_fds(m);
}

static void test_refusals(void) {
        Fixture f;
        VuMsg m;

        fixture_init(&f, NET_FEATURES, DPDK_PF);
        /* features and protocol features must have been offered */
        vu_msg_init_u64(&m, VU_SET_FEATURES, NET_FEATURES | VU_BIT(VU_F_LOG_ALL));
        expect_refused(&f, &m, "not offered");
        vu_msg_init_u64(&m, VU_SET_PROTOCOL_FEATURES, DPDK_PF | VU_BIT(VU_PF_LOG_SHMFD));
        expect_refused(&f, &m, "not offered");
        /* a request whose protocol feature was not negotiated */
        vu_msg_init_u64(&m, VU_SET_STATUS, 1);
        expect_refused(&f, &m, "not negotiated");

        send_u64(&f, VU_SET_PROTOCOL_FEATURES, DPDK_PF);
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        /* ring addresses before any memory table */
        vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
        m.hdr.size = sizeof(VuVringAddr);
        m.payload.addr = (VuVringAddr) { .index = 0, .desc_user_addr = desc_addr(0),
                                         .avail_user_addr = avail_addr(0), .used_user_addr = used_addr(0) };
        expect_refused(&f, &m, "before a memory table");
        send_mem_table(&f);
        /* ring addresses outside the memory table, or misaligned */
        m.payload.addr.used_user_addr = MEM_UADDR + MEM_SIZE - 8;
        expect_refused(&f, &m, "outside the memory table");
        m.payload.addr.used_user_addr = MEM_UADDR - 4096;
        expect_refused(&f, &m, "outside the memory table");
        m.payload.addr.used_user_addr = used_addr(0) + 2;
        expect_refused(&f, &m, "misaligned");
        /* a ring that would extend past the region once its size is known */
        m.payload.addr.used_user_addr = MEM_UADDR + MEM_SIZE - 64;
        apply_ok(&f, &m);
        vu_msg_init_state(&m, VU_SET_VRING_NUM, 0, 256);
        expect_refused(&f, &m, "outside the memory table");
        /* ring sizes */
        vu_msg_init_state(&m, VU_SET_VRING_NUM, 1, 100);
        expect_refused(&f, &m, "power of two");
        vu_msg_init_state(&m, VU_SET_VRING_NUM, 1, 65536);
        expect_refused(&f, &m, "above 32768");
        vu_msg_init_state(&m, VU_SET_VRING_NUM, 1, 0);
        expect_refused(&f, &m, "size 0");
        /* kick/call/err fds must be eventfds */
        vu_msg_init_u64(&m, VU_SET_VRING_KICK, 1);
        m.fds[m.n_fds++] = memfd_create("x", MFD_CLOEXEC);
        expect_refused(&f, &m, "not an eventfd");
        /* memory: overlapping, absurd, or unmappable regions */
        mem_table_msg(&f, &m);
        m.payload.memory.nregions = 2;
        m.hdr.size = 8 + 2 * sizeof(VuMemRegion);
        m.payload.memory.regions[1] = (VuMemRegion) { MEM_SIZE, MEM_SIZE, MEM_UADDR + 4096, 0 };
        ASSERT_EQ(vu_msg_add_fd_dup(&m, f.memfd), 0);
        expect_refused(&f, &m, "overlap");
        mem_table_msg(&f, &m);
        m.payload.memory.regions[0].memory_size = UINT64_MAX - 10;
        expect_refused(&f, &m, "wraps");
        mem_table_msg(&f, &m);
        m.payload.memory.regions[0].memory_size = 0;
        expect_refused(&f, &m, "size 0");
        mem_table_msg(&f, &m);
        close(m.fds[0]);
        m.fds[0] = eventfd(0, EFD_CLOEXEC);
        expect_refused(&f, &m, "not a file that can be mapped");
        /* longer than its fd: it would map, and reading the used index would raise SIGBUS */
        mem_table_msg(&f, &m);
        m.payload.memory.regions[0].memory_size = 2 * MEM_SIZE;
        expect_refused(&f, &m, "goes past the end of its fd");
        mem_table_msg(&f, &m);
        m.payload.memory.regions[0].mmap_offset = 4096;
        expect_refused(&f, &m, "goes past the end of its fd");
        /* the old table is still there after the refusals */
        ASSERT_EQ(f.s.memory.n_regions, 1);
        ASSERT(guest_memory_translate(&f.s.memory, used_addr(0), 4) != NULL);
        ASSERT(guest_memory_translate(&f.s.memory, MEM_UADDR + MEM_SIZE - 2, 4) == NULL);
        ASSERT(guest_memory_translate(&f.s.memory, UINT64_MAX - 1, 4) == NULL);
        fixture_done(&f);
}

static void test_missing_features_and_reset(void) {
        Fixture f;
        uint64_t missing, missing_pf;

        fixture_init(&f, NET_FEATURES, DPDK_PF);
        dpdk_virtio_user_setup(&f);
        shadow_missing(&f.s, NET_FEATURES & ~VU_BIT(35), DPDK_PF & ~VU_BIT(VU_PF_STATUS), &missing, &missing_pf);
        ASSERT_EQ(missing, VU_BIT(35));
        ASSERT_EQ(missing_pf, VU_BIT(VU_PF_STATUS));
        shadow_missing(&f.s, NET_FEATURES | VU_BIT(1), DPDK_PF, &missing, &missing_pf);
        ASSERT_EQ(missing, 0);
        ASSERT_EQ(missing_pf, 0);
        ASSERT_EQ(shadow_vrings_in_use(&f.s), 2);

        int fds = fd_count();
        shadow_reset(&f.s);
        ASSERT_EQ(fd_count(), fds - 5);         /* 4 eventfds and the memory fd */
        ASSERT(!f.s.features_set);
        ASSERT(f.s.backend.features_known);     /* what the back-end said stays */
        fixture_done(&f);
}

/* INFLIGHT_SHMFD: the region the front-end set is handed to every back-end, before the rings,
 * and serves GET_INFLIGHT_FD while no back-end is there. */
static void test_inflight(void) {
        Fixture f;
        VuMsg m, req, reply;
        VuMsgList l;
        const char *reason = NULL;
        const uint64_t pf = DPDK_PF | VU_BIT(VU_PF_INFLIGHT_SHMFD);

        fixture_init(&f, NET_FEATURES, pf);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, pf);
        vu_msg_init(&req, VU_GET_INFLIGHT_FD, 0);
        req.hdr.size = VU_INFLIGHT_WIRE_SIZE;
        req.payload.inflight = (VuInflight) { .num_queues = 2, .queue_size = 256 };
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);        /* only a back-end can allocate it */

        int region = memfd_create("inflight", MFD_CLOEXEC);
        ASSERT(region >= 0 && ftruncate(region, 8192) == 0);
        vu_msg_init(&m, VU_SET_INFLIGHT_FD, 0);
        m.hdr.size = VU_INFLIGHT_WIRE_SIZE;
        m.payload.inflight = (VuInflight) { .mmap_size = 8192, .mmap_offset = 0, .num_queues = 2, .queue_size = 256 };
        m.fds[m.n_fds++] = eventfd(0, EFD_CLOEXEC);            /* not mappable */
        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);
        ASSERT_STREQ(reason, "inflight fd cannot be mapped");
        close(m.fds[0]);
        m.fds[0] = fcntl(region, F_DUPFD_CLOEXEC, 3);
        m.payload.inflight.mmap_size = 0;
        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);
        ASSERT_STREQ(reason, "absurd inflight region");
        m.payload.inflight.mmap_size = 8192;
        apply_ok(&f, &m);

        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        send_mem_table(&f);
        send_state(&f, VU_SET_VRING_NUM, 0, RING_NUM);
        ASSERT_EQ(shadow_build_replay(&f.s, pf, &l, &reason), 0);
        size_t at = SIZE_MAX, first_ring = SIZE_MAX;
        for (size_t i = 0; i < l.n; i++) {
                if (l.msgs[i].hdr.request == VU_SET_INFLIGHT_FD)
                        at = i;
                if (l.msgs[i].hdr.request == VU_SET_VRING_NUM && first_ring == SIZE_MAX)
                        first_ring = i;
        }
        ASSERT(at != SIZE_MAX && at < first_ring);
        ASSERT_EQ(l.msgs[at].n_fds, 1);
        ASSERT_EQ(l.msgs[at].payload.inflight.mmap_size, 8192);
        ASSERT(vu_msg_needs_reply(&l.msgs[at]));
        vu_msg_list_clear(&l);

        /* answered from the shadow now, with the same region */
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.n_fds, 1);
        ASSERT_EQ(reply.payload.inflight.mmap_size, 8192);
        struct stat a, b;
        ASSERT(fstat(reply.fds[0], &a) == 0 && fstat(region, &b) == 0);
        ASSERT_EQ(a.st_ino, b.st_ino);
        vu_msg_close_fds(&reply);
        req.payload.inflight.num_queues = 4;                    /* another layout: a back-end decides */
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);

        /* and it survives a restart of the daemon */
        json_object *j;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        Shadow r;
        ASSERT_EQ(shadow_to_json(&f.s, &j, fds, &n_fds), 0);
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, j, fds, n_fds, &reason), 0);
        ASSERT(r.inflight_set);
        ASSERT_EQ(r.inflight.num_queues, 2);
        ASSERT(fstat(r.inflight_fd, &a) == 0);
        ASSERT_EQ(a.st_ino, b.st_ino);
        json_object_put(j);
        shadow_done(&r);
        close(region);
        fixture_done(&f);
}

/* CONFIGURE_MEM_SLOTS: regions added and removed one by one are replayed one by one. */
static void test_mem_slots(void) {
        Fixture f;
        VuMsg m, req, reply;
        VuMsgList l;
        const char *reason = NULL;
        const uint64_t pf = DPDK_PF | VU_BIT(VU_PF_CONFIGURE_MEM_SLOTS);

        fixture_init(&f, NET_FEATURES, pf);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, pf);
        vu_msg_init(&req, VU_GET_MAX_MEM_SLOTS, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 0);
        shadow_record_backend(&f.s, VU_GET_MAX_MEM_SLOTS, 3);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.payload.u64, 3);

        /* three 256 KiB regions out of the one memfd */
        for (unsigned i = 0; i < 4; i++) {
                vu_msg_init(&m, VU_ADD_MEM_REG, 0);
                m.hdr.size = sizeof(VuMemRegionMsg);
                m.payload.mem_reg.region = (VuMemRegion) { i * 0x40000, 0x40000, MEM_UADDR + i * 0x40000, i * 0x40000 };
                ASSERT_EQ(vu_msg_add_fd_dup(&m, f.memfd), 0);
                if (i < 3)
                        apply_ok(&f, &m);
                else {
                        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);     /* the back-end has 3 slots */
                        ASSERT_STREQ(reason, "more memory regions than the back-end has slots");
                        vu_msg_close_fds(&m);
                }
        }
        ASSERT_EQ(f.s.memory.n_regions, 3);
        ASSERT(guest_memory_translate(&f.s.memory, MEM_UADDR + 0x7fff0, 16) != NULL);

        /* an overlapping region, or removing one never added, is refused */
        vu_msg_init(&m, VU_ADD_MEM_REG, 0);
        m.hdr.size = sizeof(VuMemRegionMsg);
        m.payload.mem_reg.region = (VuMemRegion) { 0x1000000, 0x40000, MEM_UADDR + 0x20000, 0 };
        ASSERT_EQ(vu_msg_add_fd_dup(&m, f.memfd), 0);
        shadow_record_backend(&f.s, VU_GET_MAX_MEM_SLOTS, 509);
        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);
        ASSERT_CONTAINS(reason, "overlap");
        vu_msg_close_fds(&m);
        vu_msg_init(&m, VU_REM_MEM_REG, 0);
        m.hdr.size = sizeof(VuMemRegionMsg);
        m.payload.mem_reg.region = (VuMemRegion) { 0x40000, 0x40000, MEM_UADDR + 0x40000, 0x40000 };
        apply_ok(&f, &m);
        ASSERT_EQ(f.s.memory.n_regions, 2);
        ASSERT(guest_memory_translate(&f.s.memory, MEM_UADDR + 0x40000, 16) == NULL);
        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);
        ASSERT_STREQ(reason, "REM_MEM_REG names a region that was never added");

        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        ASSERT_EQ(shadow_build_replay(&f.s, pf, &l, &reason), 0);
        unsigned adds = 0;
        for (size_t i = 0; i < l.n; i++) {
                ASSERT(l.msgs[i].hdr.request != VU_SET_MEM_TABLE);
                if (l.msgs[i].hdr.request == VU_ADD_MEM_REG) {
                        ASSERT_EQ(l.msgs[i].n_fds, 1);
                        ASSERT(vu_msg_needs_reply(&l.msgs[i]));
                        adds++;
                }
        }
        ASSERT_EQ(adds, 2);
        vu_msg_list_clear(&l);

        /* and after a restart of the daemon, still region by region */
        json_object *j;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        Shadow r;
        ASSERT_EQ(shadow_to_json(&f.s, &j, fds, &n_fds), 0);
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, j, fds, n_fds, &reason), 0);
        ASSERT(r.memory_by_slots);
        ASSERT_EQ(r.memory.n_regions, 2);
        json_object_put(j);
        shadow_done(&r);
        fixture_done(&f);
}

/* RESET_DEVICE: rings, features and status are gone; memory and protocol features stay. */
static void test_reset_device(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;
        const uint64_t pf = DPDK_PF | VU_BIT(VU_PF_RESET_DEVICE);
        VuMsg m;

        fixture_init(&f, NET_FEATURES, pf);
        send_plain(&f, VU_SET_OWNER);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, pf);
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        send_mem_table(&f);
        send_state(&f, VU_SET_VRING_NUM, 0, RING_NUM);
        send_file(&f, VU_SET_VRING_KICK, 0);
        send_u64(&f, VU_SET_STATUS, 0xf);
        int fds = fd_count();
        send_plain(&f, VU_RESET_DEVICE);
        ASSERT_EQ(fd_count(), fds - 1);         /* the kick eventfd */
        ASSERT_EQ(f.s.n_vrings, 0);
        ASSERT(!f.s.features_set);
        ASSERT(!f.s.status_set);
        ASSERT(f.s.memory_set);
        ASSERT(f.s.protocol_features_set);
        ASSERT_EQ(shadow_build_replay(&f.s, pf, &l, &reason), 0);
        for (size_t i = 0; i < l.n; i++) {
                ASSERT(l.msgs[i].hdr.request != VU_SET_VRING_KICK);
                ASSERT(l.msgs[i].hdr.request != VU_SET_FEATURES);
                ASSERT(l.msgs[i].hdr.request != VU_SET_STATUS);
        }
        vu_msg_list_clear(&l);
        /* and only when negotiated */
        shadow_reset(&f.s);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, DPDK_PF);
        vu_msg_init(&m, VU_RESET_DEVICE, 0);
        ASSERT(shadow_apply(&f.s, &m, &reason) < 0);
        ASSERT_CONTAINS(reason, "not negotiated");
        fixture_done(&f);
}

/* A restarting daemon picks the shadow up from JSON and fds: the same replay comes out. */
static void test_json_round_trip(void) {
        Fixture f;
        Shadow r;
        json_object *j;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        VuMsgList a, b;
        const char *reason = NULL;
        VuMsg m;

        fixture_init(&f, NET_FEATURES, DPDK_PF | VU_BIT(VU_PF_CONFIG));
        send_plain(&f, VU_SET_OWNER);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, DPDK_PF | VU_BIT(VU_PF_CONFIG));
        vu_msg_init(&m, VU_SET_CONFIG, 0);
        m.payload.config = (VuConfig) { .offset = 0, .size = 6 };
        memcpy(m.payload.config.region, "\x52\x54\x00\x12\x34\x56", 6);
        m.hdr.size = VU_CONFIG_HDR_SIZE + 6;
        apply_ok(&f, &m);
        send_file(&f, VU_SET_VRING_CALL, 0);
        send_file(&f, VU_SET_VRING_CALL, 1);
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        send_mem_table(&f);
        for (unsigned i = 0; i < 2; i++) {
                send_state(&f, VU_SET_VRING_NUM, i, RING_NUM);
                send_state(&f, VU_SET_VRING_BASE, i, 0);
                send_addr(&f, i);
                send_file(&f, VU_SET_VRING_KICK, i);
        }
        send_state(&f, VU_SET_VRING_ENABLE, 0, 1);
        send_u64(&f, VU_SET_STATUS, 0xf);
        shadow_record_backend(&f.s, VU_GET_QUEUE_NUM, 4);
        shadow_vring_stopped(&f.s, 1, 77);
        set_used_idx(&f, 0, 1234);

        ASSERT_EQ(shadow_to_json(&f.s, &j, fds, &n_fds), 0);
        ASSERT_EQ(n_fds, 5);    /* memory, 2 calls, 2 kicks */
        /* through text, as it travels in a memfd */
        json_object *parsed = json_tokener_parse(json_object_to_json_string(j));
        ASSERT(parsed);
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, parsed, fds, n_fds, &reason), 0);
        ASSERT_EQ(r.backend.queue_num, 4);
        ASSERT(!r.vrings[1].started);
        ASSERT_EQ(r.vrings[1].resume, 77);

        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &a, &reason), 0);
        ASSERT_EQ(shadow_build_replay(&r, DPDK_PF, &b, &reason), 0);
        ASSERT_EQ(a.n, b.n);
        for (size_t i = 0; i < a.n; i++) {
                ASSERT_EQ(a.msgs[i].hdr.request, b.msgs[i].hdr.request);
                ASSERT_EQ(a.msgs[i].hdr.size, b.msgs[i].hdr.size);
                ASSERT(memcmp(a.msgs[i].payload.raw, b.msgs[i].payload.raw, a.msgs[i].hdr.size) == 0);
                ASSERT_EQ(a.msgs[i].n_fds, b.msgs[i].n_fds);
        }
        /* the restored shadow reads the same guest memory */
        uint32_t base;
        ASSERT_EQ(shadow_resume_index(&r, 0, &base, NULL), 0);
        ASSERT_EQ(base, 1234);
        vu_msg_list_clear(&a);
        vu_msg_list_clear(&b);

        /* damaged state is refused and leaves nothing behind */
        Shadow bad;
        int before = fd_count();
        json_object_object_add(parsed, "version", json_object_new_int(9));
        shadow_init(&bad);
        ASSERT(shadow_from_json(&bad, parsed, fds, n_fds, &reason) < 0);
        ASSERT_STREQ(reason, "unknown shadow version");
        json_object_object_add(parsed, "version", json_object_new_int(1));
        ASSERT(shadow_from_json(&bad, parsed, fds, 2, &reason) < 0);   /* fds missing */
        ASSERT_EQ(bad.n_vrings, 0);
        ASSERT_EQ(bad.memory.n_regions, 0);
        ASSERT_EQ(fd_count(), before);
        json_object_put(parsed);
        json_object_put(j);
        shadow_done(&r);
        fixture_done(&f);
}


/* vIOMMU: ring addresses are IOVAs, mapped by IOTLB updates to the front-end's memory. */
#define IOMMU_FEATURES (NET_FEATURES | VU_BIT(VIRTIO_F_ACCESS_PLATFORM))
static uint64_t ring_iova(unsigned i) { return UINT64_C(0xfff00000) + 0x10000 * (i + 1); }

static int send_iotlb(Fixture *f, uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr) {
        VuMsg m;
        const char *reason = NULL;
        vu_msg_init(&m, VU_IOTLB_MSG, VU_FLAG_NEED_REPLY);
        m.hdr.size = sizeof(VuIotlbMsg);
        m.payload.iotlb = (VuIotlbMsg) { .iova = iova, .size = size, .uaddr = uaddr, .perm = VU_ACCESS_RW, .type = type };
        ASSERT_EQ(vu_msg_check_request(&m, &reason), 0);
        return shadow_apply(&f->s, &m, &reason);
}

/* QEMU 7.2 with an intel-iommu: features (with ACCESS_PLATFORM), memory, rings at IOVAs;
 * the used rings' IOTLB updates come after the ring addresses. */
static void iommu_setup(Fixture *f) {
        send_plain(f, VU_SET_OWNER);
        send_u64(f, VU_SET_PROTOCOL_FEATURES, DPDK_PF);
        send_u64(f, VU_SET_FEATURES, IOMMU_FEATURES);
        send_mem_table(f);
        for (unsigned i = 0; i < 2; i++) {
                VuMsg m;
                send_state(f, VU_SET_VRING_NUM, i, RING_NUM);
                send_state(f, VU_SET_VRING_BASE, i, 0);
                vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
                m.hdr.size = sizeof(VuVringAddr);
                m.payload.addr = (VuVringAddr) { .index = i, .desc_user_addr = ring_iova(i),
                                                 .avail_user_addr = ring_iova(i) + 16 * RING_NUM,
                                                 .used_user_addr = ring_iova(i) + 0x8000 };
                apply_ok(f, &m);        /* IOVAs, not in the memory table: taken */
                send_file(f, VU_SET_VRING_CALL, i);
                send_file(f, VU_SET_VRING_KICK, i);
        }
        for (unsigned i = 0; i < 2; i++)
                ASSERT_EQ(send_iotlb(f, VU_IOTLB_UPDATE, ring_iova(i), 0x10000, desc_addr(i)), 0);
        send_state(f, VU_SET_VRING_ENABLE, 0, 1);
        send_state(f, VU_SET_VRING_ENABLE, 1, 1);
        send_u64(f, VU_SET_STATUS, 0xf);
}

static void test_iommu_features(void) {
        Fixture f;
        uint64_t v;

        /* offered when the back-end offers it */
        fixture_init(&f, IOMMU_FEATURES, DPDK_PF);
        ASSERT(shadow_frontend_features(&f.s, &v));
        ASSERT(v & VU_BIT(VIRTIO_F_ACCESS_PLATFORM));
        ASSERT(!shadow_iommu(&f.s));
        fixture_done(&f);
        fixture_init(&f, NET_FEATURES, DPDK_PF);
        ASSERT(shadow_frontend_features(&f.s, &v));
        ASSERT_EQ(v & VU_BIT(VIRTIO_F_ACCESS_PLATFORM), 0);
        fixture_done(&f);

        /* without a vIOMMU QEMU leaves the bit out of SET_FEATURES: addresses are its own and
         * are checked against memory as always; there is no IOTLB to replay */
        fixture_init(&f, IOMMU_FEATURES, DPDK_PF);
        dpdk_virtio_user_setup(&f);
        ASSERT(!shadow_iommu(&f.s));
        VuMsg m;
        vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
        m.hdr.size = sizeof(VuVringAddr);
        m.payload.addr = (VuVringAddr) { .index = 0, .desc_user_addr = ring_iova(0),
                                         .avail_user_addr = ring_iova(0) + 0x1000, .used_user_addr = ring_iova(0) + 0x8000 };
        ASSERT_EQ(apply(&f, &m), -EINVAL);
        fixture_done(&f);
}

static void test_iommu_resume_and_replay(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;
        uint32_t base;
        bool from_memory;

        fixture_init(&f, IOMMU_FEATURES, DPDK_PF);
        iommu_setup(&f);
        ASSERT(shadow_iommu(&f.s));
        ASSERT_EQ(f.s.iotlb.n, 2);
        /* the switch crashed: the used index is read where the IOTLB maps the used ring */
        set_used_idx(&f, 0, 5001);
        set_used_idx(&f, 1, 6002);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, &from_memory), 0);
        ASSERT_EQ(base, 5001);
        ASSERT(from_memory);
        uint16_t avail, used;
        ASSERT_EQ(shadow_read_ring_indexes(&f.s, 1, &avail, &used), 0);
        ASSERT_EQ(used, 6002);

        /* the replay: rings made (SET_VRING_NUM), then the translations, then the rings */
        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &l, &reason), 0);
        const Expect e[] = {
                { VU_SET_PROTOCOL_FEATURES, 0, DPDK_PF, 0 },
                { VU_GET_QUEUE_NUM, 0, ANY, 0 },
                { VU_SET_FEATURES, 0, IOMMU_FEATURES, 0 },
                { VU_SET_MEM_TABLE, 0, ANY, 1 },
                { VU_SET_VRING_NUM, 0, RING_NUM, 0 },
                { VU_SET_VRING_NUM, 1, RING_NUM, 0 },
                { VU_IOTLB_MSG, 0, ANY, 0 },
                { VU_IOTLB_MSG, 0, ANY, 0 },
                { VU_SET_VRING_BASE, 0, 5001, 0 },
                { VU_SET_VRING_ADDR, 0, ANY, 0 },
                { VU_SET_VRING_CALL, 0, 0, 1 },
                { VU_SET_VRING_KICK, 0, 0, 1 },
                { VU_SET_VRING_BASE, 1, 6002, 0 },
                { VU_SET_VRING_ADDR, 1, ANY, 0 },
                { VU_SET_VRING_CALL, 1, 1, 1 },
                { VU_SET_VRING_KICK, 1, 1, 1 },
                { VU_SET_VRING_ENABLE, 0, 1, 0 },
                { VU_SET_VRING_ENABLE, 1, 1, 0 },
                { VU_SET_STATUS, 0, 0xf, 0 },
        };
        check_replay(&l, e, ELEMENTSOF(e), true);
        for (unsigned i = 0; i < 2; i++) {
                const VuIotlbMsg *m = &l.msgs[6 + i].payload.iotlb;
                ASSERT_EQ(m->type, VU_IOTLB_UPDATE);
                ASSERT_EQ(m->iova, ring_iova(i));
                ASSERT_EQ(m->size, 0x10000);
                ASSERT_EQ(m->uaddr, desc_addr(i));
                ASSERT_EQ(m->perm, VU_ACCESS_RW);
        }
        ASSERT_EQ(l.msgs[9].payload.addr.used_user_addr, ring_iova(0) + 0x8000);   /* IOVAs as given */
        vu_msg_list_clear(&l);

        /* no back-end: an IOTLB message is acked from the shadow */
        VuMsg req, reply;
        vu_msg_init(&req, VU_IOTLB_MSG, VU_FLAG_NEED_REPLY);
        req.hdr.size = sizeof(VuIotlbMsg);
        req.payload.iotlb = (VuIotlbMsg) { .iova = 0x1000, .size = 0x1000, .type = VU_IOTLB_INVALIDATE };
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT(vu_msg_is_reply(&reply));
        ASSERT_EQ(reply.payload.u64, 0);

        /* the guest unmaps ring 1: its index cannot be read, the replay says so */
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_INVALIDATE, ring_iova(1) + 0x8000, 0x1000, 0), 0);
        ASSERT(shadow_resume_index(&f.s, 1, &base, NULL) < 0);
        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &l, &reason), -EFAULT);
        ASSERT_CONTAINS(reason, "not readable");
        /* mapped again, elsewhere: read from there */
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_UPDATE, ring_iova(1) + 0x8000, 0x1000, MEM_UADDR + 0x80000), 0);
        ((uint16_t *) (f.mem + 0x80000))[1] = 77;
        ASSERT_EQ(shadow_resume_index(&f.s, 1, &base, NULL), 0);
        ASSERT_EQ(base, 77);
        fixture_done(&f);
}

/* Hostile or stale entries never make the daemon read outside the memory it mapped. */
static void test_iommu_outside_memory(void) {
        Fixture f;
        VuMsgList l;
        const char *reason = NULL;
        uint32_t base;

        fixture_init(&f, IOMMU_FEATURES, DPDK_PF);
        iommu_setup(&f);
        /* an update pointing past the memory table is taken (passed on) but not kept */
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_UPDATE, ring_iova(0), 0x10000, MEM_UADDR + MEM_SIZE - 0x8000), 1);
        ASSERT(shadow_resume_index(&f.s, 0, &base, NULL) < 0);
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_UPDATE, ring_iova(0), 0x10000, desc_addr(0)), 0);
        /* a wrap-around is refused outright */
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_UPDATE, UINT64_MAX - 0xfff, 0x2000, MEM_UADDR), -EINVAL);
        /* the memory table shrinks under the entries: the ring mapped past its end is not read,
         * and its entry is not replayed */
        VuMsg m;
        vu_msg_init(&m, VU_SET_MEM_TABLE, 0);
        m.payload.memory.nregions = 1;
        m.payload.memory.regions[0] = (VuMemRegion) { 0, 0x20000, MEM_UADDR, 0 };      /* ring 0 only */
        m.hdr.size = 8 + sizeof(VuMemRegion);
        ASSERT_EQ(vu_msg_add_fd_dup(&m, f.memfd), 0);
        apply_ok(&f, &m);
        set_used_idx(&f, 0, 9);
        ASSERT_EQ(shadow_resume_index(&f.s, 0, &base, NULL), 0);
        ASSERT_EQ(base, 9);
        ASSERT(shadow_resume_index(&f.s, 1, &base, NULL) < 0);
        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &l, &reason), -EFAULT);
        /* ring 1 stopped cleanly: the replay goes through, with ring 0's entry only */
        shadow_vring_stopped(&f.s, 1, 3);
        ASSERT_EQ(shadow_build_replay(&f.s, DPDK_PF, &l, &reason), 0);
        unsigned n = 0;
        for (size_t i = 0; i < l.n; i++)
                if (l.msgs[i].hdr.request == VU_IOTLB_MSG) {
                        ASSERT_EQ(l.msgs[i].payload.iotlb.iova, ring_iova(0));
                        n++;
                }
        ASSERT_EQ(n, 1);
        vu_msg_list_clear(&l);
        /* the front-end leaving forgets the IOTLB */
        shadow_reset(&f.s);
        ASSERT_EQ(f.s.iotlb.n, 0);
        fixture_done(&f);
}

/* The IOTLB goes with the rest of the state into the fd store. */
static void test_iommu_json_round_trip(void) {
        Fixture f;
        Shadow r;
        json_object *j;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        const char *reason = NULL;
        uint32_t base;

        fixture_init(&f, IOMMU_FEATURES, DPDK_PF);
        iommu_setup(&f);
        ASSERT_EQ(send_iotlb(&f, VU_IOTLB_UPDATE, 0x40000, 0x1000, MEM_UADDR + 0x3000), 0);
        set_used_idx(&f, 1, 4321);
        ASSERT_EQ(shadow_to_json(&f.s, &j, fds, &n_fds), 0);
        json_object *parsed = json_tokener_parse(json_object_to_json_string(j));
        ASSERT(parsed);
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, parsed, fds, n_fds, &reason), 0);
        ASSERT_EQ(r.iotlb.n, 3);
        for (unsigned i = 0; i < 3; i++) {
                ASSERT_EQ(r.iotlb.entries[i].iova, f.s.iotlb.entries[i].iova);
                ASSERT_EQ(r.iotlb.entries[i].size, f.s.iotlb.entries[i].size);
                ASSERT_EQ(r.iotlb.entries[i].uaddr, f.s.iotlb.entries[i].uaddr);
                ASSERT_EQ(r.iotlb.entries[i].perm, f.s.iotlb.entries[i].perm);
        }
        ASSERT_EQ(shadow_resume_index(&r, 1, &base, NULL), 0);
        ASSERT_EQ(base, 4321);
        shadow_done(&r);

        /* packed in one string; the form written before (an object per entry) still reads */
        ASSERT(json_object_object_get_ex(parsed, "iotlb_packed", NULL));
        json_object_object_del(parsed, "iotlb_packed");
        json_object *old = json_object_new_array();
        for (unsigned i = 0; i < f.s.iotlb.n; i++) {
                json_object *x = json_object_new_object();
                json_object_object_add(x, "iova", json_object_new_uint64(f.s.iotlb.entries[i].iova));
                json_object_object_add(x, "size", json_object_new_uint64(f.s.iotlb.entries[i].size));
                json_object_object_add(x, "uaddr", json_object_new_uint64(f.s.iotlb.entries[i].uaddr));
                json_object_object_add(x, "perm", json_object_new_uint64(f.s.iotlb.entries[i].perm));
                json_object_array_add(old, x);
        }
        json_object_object_add(parsed, "iotlb", old);
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, parsed, fds, n_fds, &reason), 0);
        ASSERT_EQ(r.iotlb.n, 3);
        ASSERT_EQ(r.iotlb.entries[2].uaddr, f.s.iotlb.entries[2].uaddr);
        shadow_done(&r);
        /* a torn or foreign packed string is refused, not half taken */
        json_object_object_del(parsed, "iotlb");
        json_object_object_add(parsed, "iotlb_packed", json_object_new_string("00ff"));
        shadow_init(&r);
        ASSERT(shadow_from_json(&r, parsed, fds, n_fds, &reason) < 0);
        ASSERT_CONTAINS(reason, "IOTLB");
        shadow_done(&r);
        json_object_put(parsed);
        json_object_put(j);
        fixture_done(&f);
}

/* Live migration, as QEMU 7.2 drives it: SET_LOG_BASE (a memfd, 16-byte payload), then
 * SET_FEATURES with LOG_ALL, then every ring's address again with VHOST_VRING_F_LOG. */
#define MIG_PF (VU_BIT(VU_PF_MQ) | VU_BIT(VU_PF_REPLY_ACK) | VU_BIT(VU_PF_LOG_SHMFD))
#define LOG_SIZE 4096u

static int log_memfd(uint64_t size) {
        int fd = memfd_create("vhost-log", MFD_CLOEXEC | MFD_ALLOW_SEALING);
        ASSERT(fd >= 0);
        ASSERT(ftruncate(fd, size) == 0);
        return fd;
}

static void log_base_msg(VuMsg *m, int fd, uint64_t size, uint64_t offset) {
        vu_msg_init(m, VU_SET_LOG_BASE, 0);
        m->hdr.size = sizeof(VuLog);
        m->payload.log = (VuLog) { .mmap_size = size, .mmap_offset = offset };
        ASSERT_EQ(vu_msg_add_fd_dup(m, fd), 0);
}

static void send_addr_flags(Fixture *f, unsigned i, uint32_t flags) {
        VuMsg m;
        vu_msg_init(&m, VU_SET_VRING_ADDR, 0);
        m.hdr.size = sizeof(VuVringAddr);
        m.payload.addr = (VuVringAddr) { .index = i, .flags = flags, .desc_user_addr = desc_addr(i),
                                         .avail_user_addr = avail_addr(i), .used_user_addr = used_addr(i),
                                         .log_guest_addr = used_addr(i) - MEM_UADDR };
        apply_ok(f, &m);
}

static void qemu_migration_setup(Fixture *f) {
        fixture_init(f, NET_FEATURES | VU_BIT(VU_F_LOG_ALL), MIG_PF);
        send_plain(f, VU_SET_OWNER);
        send_u64(f, VU_SET_PROTOCOL_FEATURES, MIG_PF);
        send_u64(f, VU_SET_FEATURES, NET_FEATURES);
        send_mem_table(f);
        for (unsigned i = 0; i < 2; i++) {
                send_state(f, VU_SET_VRING_NUM, i, RING_NUM);
                send_state(f, VU_SET_VRING_BASE, i, 0);
                send_addr(f, i);
                send_file(f, VU_SET_VRING_KICK, i);
                send_file(f, VU_SET_VRING_CALL, i);
        }
        send_state(f, VU_SET_VRING_ENABLE, 0, 1);
        send_state(f, VU_SET_VRING_ENABLE, 1, 1);
}

static void start_logging(Fixture *f, int logfd) {
        VuMsg m;
        log_base_msg(&m, logfd, LOG_SIZE, 0);
        apply_ok(f, &m);
        send_u64(f, VU_SET_FEATURES, NET_FEATURES | VU_BIT(VU_F_LOG_ALL));
        for (unsigned i = 0; i < 2; i++)
                send_addr_flags(f, i, VU_BIT(VU_VRING_F_LOG));
}

static void test_dirty_log_replay(void) {
        Fixture f;
        VuMsgList l;
        VuMsg req, reply;
        const char *reason = NULL;
        int logfd = log_memfd(LOG_SIZE);
        struct stat st_log, st_sent;

        qemu_migration_setup(&f);
        ASSERT(!shadow_logging(&f.s));
        start_logging(&f, logfd);
        ASSERT(shadow_logging(&f.s));
        ASSERT(f.s.log.fd >= 0);
        ASSERT_EQ(f.s.log.region.mmap_size, LOG_SIZE);

        /* without a back-end the front-end gets its answer (it waits for one with LOG_SHMFD) */
        log_base_msg(&req, logfd, LOG_SIZE, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.hdr.request, VU_SET_LOG_BASE);
        ASSERT_EQ(reply.hdr.flags, VU_VERSION | VU_FLAG_REPLY);
        ASSERT_EQ(reply.hdr.size, 8);
        ASSERT_EQ(reply.payload.u64, 0);
        ASSERT_EQ(reply.n_fds, 0);
        vu_msg_close_fds(&req);

        /* a back-end connecting mid-migration: LOG_ALL with the features, the log right
         * after the memory table, both before any ring is set up, let alone kicked */
        set_used_idx(&f, 0, 17);
        set_used_idx(&f, 1, 19);
        ASSERT_EQ(shadow_build_replay(&f.s, MIG_PF, &l, &reason), 0);
        const Expect e[] = {
                { VU_SET_PROTOCOL_FEATURES, 0, MIG_PF, 0 },
                { VU_GET_QUEUE_NUM, 0, ANY, 0 },
                { VU_SET_FEATURES, 0, NET_FEATURES | VU_BIT(VU_F_LOG_ALL), 0 },
                { VU_SET_MEM_TABLE, 0, ANY, 1 },
                { VU_SET_LOG_BASE, 0, ANY, 1 },
                { VU_SET_VRING_NUM, 0, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 0, 17, 0 },
                { VU_SET_VRING_ADDR, 0, ANY, 0 },
                { VU_SET_VRING_CALL, 0, 0, 1 },
                { VU_SET_VRING_KICK, 0, 0, 1 },
                { VU_SET_VRING_NUM, 1, RING_NUM, 0 },
                { VU_SET_VRING_BASE, 1, 19, 0 },
                { VU_SET_VRING_ADDR, 1, ANY, 0 },
                { VU_SET_VRING_CALL, 1, 1, 1 },
                { VU_SET_VRING_KICK, 1, 1, 1 },
                { VU_SET_VRING_ENABLE, 0, 1, 0 },
                { VU_SET_VRING_ENABLE, 1, 1, 0 },
        };
        check_replay(&l, e, ELEMENTSOF(e), true);
        /* the log as the front-end gave it: same file, same size and offset */
        ASSERT_EQ(l.msgs[4].payload.log.mmap_size, LOG_SIZE);
        ASSERT_EQ(l.msgs[4].payload.log.mmap_offset, 0);
        ASSERT(fstat(logfd, &st_log) == 0 && fstat(l.msgs[4].fds[0], &st_sent) == 0);
        ASSERT_EQ(st_log.st_ino, st_sent.st_ino);
        /* the rings log their used ring at the front-end's log address */
        ASSERT_EQ(l.msgs[7].payload.addr.flags, VU_BIT(VU_VRING_F_LOG));
        ASSERT_EQ(l.msgs[7].payload.addr.log_guest_addr, used_addr(0) - MEM_UADDR);
        vu_msg_list_clear(&l);

        /* the end of the migration: the source stops its rings (answered from the used ring
         * while no back-end is there), logging stays on until the device starts again */
        set_used_idx(&f, 0, 23);
        vu_msg_init_state(&req, VU_GET_VRING_BASE, 0, 0);
        ASSERT_EQ(apply(&f, &req), 0);
        vu_msg_init_state(&req, VU_GET_VRING_BASE, 0, 0);
        ASSERT_EQ(shadow_answer(&f.s, &req, &reply), 1);
        ASSERT_EQ(reply.payload.state.num, 23);

        /* logging stops (a cancelled migration, or the source resumed): the log is let go
         * and a back-end connecting after that gets no log and no LOG_ALL */
        send_u64(&f, VU_SET_FEATURES, NET_FEATURES);
        for (unsigned i = 0; i < 2; i++)
                send_addr_flags(&f, i, 0);
        ASSERT(!shadow_logging(&f.s));
        ASSERT_EQ(f.s.log.fd, -1);
        ASSERT_EQ(shadow_build_replay(&f.s, MIG_PF, &l, &reason), 0);
        for (size_t i = 0; i < l.n; i++) {
                ASSERT(l.msgs[i].hdr.request != VU_SET_LOG_BASE);
                if (l.msgs[i].hdr.request == VU_SET_FEATURES)
                        ASSERT_EQ(l.msgs[i].payload.u64 & VU_BIT(VU_F_LOG_ALL), 0);
                if (l.msgs[i].hdr.request == VU_SET_VRING_ADDR)
                        ASSERT_EQ(l.msgs[i].payload.addr.flags, 0);
        }
        vu_msg_list_clear(&l);
        fixture_done(&f);
        close(logfd);
}

/* SET_LOG_FD (optional, an eventfd) goes right after the log base; a later log base
 * replaces the first; a reset drops both. */
static void test_dirty_log_fd_and_reset(void) {
        Fixture f;
        VuMsgList l;
        VuMsg m;
        const char *reason = NULL;
        int logfd = log_memfd(LOG_SIZE);
        int before = fd_count();

        qemu_migration_setup(&f);
        start_logging(&f, logfd);
        vu_msg_init(&m, VU_SET_LOG_FD, 0);
        m.fds[m.n_fds++] = eventfd(0, EFD_CLOEXEC);
        apply_ok(&f, &m);
        /* a second log base (QEMU resizes the log when guest memory grows) replaces the first */
        int bigger = log_memfd(2 * LOG_SIZE);
        log_base_msg(&m, bigger, 2 * LOG_SIZE, 0);
        apply_ok(&f, &m);
        ASSERT_EQ(shadow_build_replay(&f.s, MIG_PF, &l, &reason), 0);
        size_t at = 0;
        while (at < l.n && l.msgs[at].hdr.request != VU_SET_LOG_BASE)
                at++;
        ASSERT(at + 1 < l.n);
        ASSERT_EQ(l.msgs[at].payload.log.mmap_size, 2 * LOG_SIZE);
        ASSERT_EQ(l.msgs[at + 1].hdr.request, VU_SET_LOG_FD);
        ASSERT_EQ(l.msgs[at + 1].n_fds, 1);
        ASSERT(fd_is_eventfd(l.msgs[at + 1].fds[0]));
        ASSERT_EQ(l.msgs[at + 1].hdr.size, 0);
        vu_msg_list_clear(&l);

        send_plain(&f, VU_RESET_OWNER);
        ASSERT_EQ(f.s.log.fd, -1);
        ASSERT_EQ(f.s.log.notify_fd, -1);
        fixture_done(&f);
        close(bigger);
        ASSERT_EQ(fd_count(), before);
        close(logfd);
}

static void test_dirty_log_refusals(void) {
        Fixture f;
        VuMsg m;
        int logfd = log_memfd(LOG_SIZE);

        /* no LOG_SHMFD negotiated: a log fd where none is expected */
        fixture_init(&f, NET_FEATURES | VU_BIT(VU_F_LOG_ALL), MIG_PF);
        send_u64(&f, VU_SET_PROTOCOL_FEATURES, VU_BIT(VU_PF_MQ));
        log_base_msg(&m, logfd, LOG_SIZE, 0);
        expect_refused(&f, &m, "not negotiated");
        vu_msg_init(&m, VU_SET_LOG_FD, 0);
        m.fds[m.n_fds++] = eventfd(0, EFD_CLOEXEC);
        expect_refused(&f, &m, "not negotiated");
        fixture_done(&f);

        qemu_migration_setup(&f);
        /* a log that is not a file */
        int efd = eventfd(0, EFD_CLOEXEC);
        log_base_msg(&m, efd, LOG_SIZE, 0);
        expect_refused(&f, &m, "not a mappable file");
        close(efd);
        /* a file shorter than offset + size (a back-end would die of SIGBUS) */
        log_base_msg(&m, logfd, LOG_SIZE + 1, 0);
        expect_refused(&f, &m, "at least offset + size");
        log_base_msg(&m, logfd, LOG_SIZE, 4096);
        expect_refused(&f, &m, "at least offset + size");
        log_base_msg(&m, logfd, 0, 0);
        expect_refused(&f, &m, "size 0");
        log_base_msg(&m, logfd, UINT64_MAX, 4096);
        expect_refused(&f, &m, "overflows");
        /* a sealed read-only file cannot be mapped for writing */
        int ro = log_memfd(LOG_SIZE);
        ASSERT(fcntl(ro, F_ADD_SEALS, F_SEAL_WRITE) == 0);
        log_base_msg(&m, ro, LOG_SIZE, 0);
        expect_refused(&f, &m, "mapped shared and writable");
        close(ro);
        /* SET_LOG_FD wants an eventfd */
        vu_msg_init(&m, VU_SET_LOG_FD, 0);
        ASSERT_EQ(vu_msg_add_fd_dup(&m, logfd), 0);
        expect_refused(&f, &m, "not an eventfd");
        /* nothing refused was kept */
        ASSERT_EQ(f.s.log.fd, -1);
        ASSERT_EQ(f.s.log.notify_fd, -1);
        /* LOG_ALL needs the back-end's offer, as any feature */
        fixture_done(&f);
        fixture_init(&f, NET_FEATURES, MIG_PF);
        vu_msg_init_u64(&m, VU_SET_FEATURES, NET_FEATURES | VU_BIT(VU_F_LOG_ALL));
        expect_refused(&f, &m, "not offered");
        fixture_done(&f);
        close(logfd);
}

/* After a back-end is lost mid-migration every page of the log is marked, and nothing
 * outside the log region (before its offset) is touched. */
static void test_dirty_log_mark_all(void) {
        Fixture f;
        VuMsg m;
        int logfd = log_memfd(3 * LOG_SIZE);
        uint8_t *p = mmap(NULL, 3 * LOG_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, logfd, 0);
        ASSERT(p != MAP_FAILED);

        qemu_migration_setup(&f);
        ASSERT_EQ(dirty_log_mark_all(&f.s.log), 0);    /* no log: nothing to do */
        /* an odd offset and size, so that the byte-wise head and tail are used too */
        log_base_msg(&m, logfd, LOG_SIZE + 5, LOG_SIZE + 3);
        apply_ok(&f, &m);
        p[LOG_SIZE + 10] = 0x01;                        /* a page the back-end had marked */
        ASSERT_EQ(dirty_log_mark_all(&f.s.log), 0);
        for (unsigned i = 0; i < 3 * LOG_SIZE; i++)
                ASSERT_EQ(p[i], i >= LOG_SIZE + 3 && i < 2 * LOG_SIZE + 8 ? 0xff : 0);
        munmap(p, 3 * LOG_SIZE);
        fixture_done(&f);
        close(logfd);
}

static void test_dirty_log_json(void) {
        Fixture f;
        Shadow r;
        json_object *j;
        int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        const char *reason = NULL;
        VuMsg m;
        int logfd = log_memfd(LOG_SIZE);

        qemu_migration_setup(&f);
        start_logging(&f, logfd);
        vu_msg_init(&m, VU_SET_LOG_FD, 0);
        m.fds[m.n_fds++] = eventfd(0, EFD_CLOEXEC);
        apply_ok(&f, &m);
        ASSERT_EQ(shadow_to_json(&f.s, &j, fds, &n_fds), 0);
        json_object *parsed = json_tokener_parse(json_object_to_json_string(j));
        shadow_init(&r);
        ASSERT_EQ(shadow_from_json(&r, parsed, fds, n_fds, &reason), 0);
        ASSERT(r.log.fd >= 0 && r.log.notify_fd >= 0);
        ASSERT_EQ(r.log.region.mmap_size, LOG_SIZE);
        ASSERT(shadow_logging(&r));
        json_object_put(parsed);
        json_object_put(j);
        shadow_done(&r);
        fixture_done(&f);
        close(logfd);
}

RUN_TESTS(
        TEST_CASE(test_iommu_json_round_trip),
        TEST_CASE(test_iommu_features),
        TEST_CASE(test_iommu_resume_and_replay),
        TEST_CASE(test_iommu_outside_memory),
        TEST_CASE(test_dpdk_sequence_replay),
        TEST_CASE(test_qemu_sequence_replay),
        TEST_CASE(test_legacy_replay_without_protocol_features),
        TEST_CASE(test_resume_index),
        TEST_CASE(test_packed_resume_index),
        TEST_CASE(test_answers_without_backend),
        TEST_CASE(test_config_cache_and_replay),
        TEST_CASE(test_refusals),
        TEST_CASE(test_missing_features_and_reset),
        TEST_CASE(test_json_round_trip),
        TEST_CASE(test_inflight),
        TEST_CASE(test_mem_slots),
        TEST_CASE(test_reset_device),
        TEST_CASE(test_dirty_log_replay),
        TEST_CASE(test_dirty_log_fd_and_reset),
        TEST_CASE(test_dirty_log_refusals),
        TEST_CASE(test_dirty_log_mark_all),
        TEST_CASE(test_dirty_log_json));
