/* SPDX-License-Identifier: MIT */
/* The device shadow on arbitrary sequences of front-end requests, with real fds (eventfds,
 * a memfd of guest memory) where a request carries them: apply, answer, resume indexes,
 * the replay and the JSON form a restart uses; with ACCESS_PLATFORM, IOTLB updates and
 * invalidations and ring indexes read through them. Nothing may crash, read outside guest
 * memory, or leak an fd. */
#include <stdlib.h>
#include <fcntl.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fd-util.h"
#include "shadow-json.h"
#include "shadow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MEM (256u * 1024)

static int memfd = -1;

/* Records: u8 request, u8 flags (bit 0: NEED_REPLY), u16 size, then the payload. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Shadow s;
        const char *reason;

        if (memfd < 0) {
                memfd = memfd_create("guest", MFD_CLOEXEC);
                if (memfd < 0 || ftruncate(memfd, MEM) < 0)
                        abort();
        }
        int fds_before = fd_count();
        shadow_init(&s);
        shadow_record_backend(&s, VU_GET_FEATURES, ~UINT64_C(0));
        shadow_record_backend(&s, VU_GET_PROTOCOL_FEATURES, ~UINT64_C(0));

        for (size_t off = 0; off + 4 <= size;) {
                VuMsg m, reply;
                vu_msg_init(&m, data[off] % _VU_REQUEST_MAX, (data[off + 1] & 1) ? VU_FLAG_NEED_REPLY : 0);
                uint16_t n = (uint16_t) (data[off + 2] | data[off + 3] << 8);
                off += 4;
                if (n > VU_MAX_PAYLOAD)
                        n = VU_MAX_PAYLOAD;
                if (n > size - off)
                        n = (uint16_t) (size - off);
                memset(m.payload.raw, 0, sizeof(m.payload.raw));
                memcpy(m.payload.raw, data + off, n);
                m.hdr.size = n;
                off += n;

                /* as many fds as the request wants: guest memory for memory, eventfds else */
                for (int k = 0; k < 9 && vu_msg_check_request(&m, &reason) < 0 && strstr(reason, "fewer fds"); k++) {
                        bool memory = m.hdr.request == VU_SET_MEM_TABLE || m.hdr.request == VU_ADD_MEM_REG ||
                                      m.hdr.request == VU_SET_INFLIGHT_FD || m.hdr.request == VU_SET_LOG_BASE;
                        m.fds[m.n_fds++] = memory ? fcntl(memfd, F_DUPFD_CLOEXEC, 3) : eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
                }
                if (vu_msg_check_request(&m, &reason) == 0 && shadow_apply(&s, &m, &reason) >= 0 &&
                    shadow_answer(&s, &m, &reply) > 0)
                        vu_msg_close_fds(&reply);
                vu_msg_close_fds(&m);
        }

        for (unsigned i = 0; i < s.n_vrings; i++) {
                uint32_t base;
                uint16_t avail, used;
                (void) shadow_resume_index(&s, i, &base, NULL);
                (void) shadow_read_ring_indexes(&s, i, &avail, &used);
        }
        /* the IOTLB stays sorted, disjoint and within its bound */
        if (s.iotlb.n > IOTLB_SHADOW_MAX_ENTRIES)
                abort();
        for (unsigned i = 0; i < s.iotlb.n; i++) {
                const IotlbEntry *e = &s.iotlb.entries[i];
                if (e->size == 0 || e->iova + (e->size - 1) < e->iova ||
                    (i > 0 && e[-1].iova + (e[-1].size - 1) >= e->iova))
                        abort();
        }
        VuMsgList l;
        if (shadow_build_replay(&s, s.protocol_features | VU_BIT(VU_PF_REPLY_ACK), &l, &reason) == 0)
                vu_msg_list_clear(&l);
        if (shadow_build_replay(&s, s.protocol_features & ~VU_BIT(VU_PF_REPLY_ACK), &l, &reason) == 0)
                vu_msg_list_clear(&l);

        json_object *j;
        static int fds[SHADOW_MAX_SAVED_FDS];
        size_t n_fds;
        if (shadow_to_json(&s, &j, fds, &n_fds) == 0) {
                Shadow r;
                shadow_init(&r);
                if (shadow_from_json(&r, j, fds, n_fds, &reason) == 0)
                        shadow_done(&r);
                json_object_put(j);
        }
        shadow_done(&s);
        if (fd_count() != fds_before)
                abort();        /* an fd leaked */
        return 0;
}
