/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "iotlb.h"

void iotlb_init(Iotlb *t) {
        memset(t, 0, sizeof(*t));
}

void iotlb_clear(Iotlb *t) {
        free(t->entries);
        iotlb_init(t);
}

static int fail(const char **ret_reason, const char *reason, int err) {
        if (ret_reason)
                *ret_reason = reason;
        return err;
}

/* The last byte of an entry: sizes are >= 1 and never wrap once kept. */
static uint64_t last_of(const IotlbEntry *e) {
        return e->iova + (e->size - 1);
}

int iotlb_check_message(const VuIotlbMsg *msg, const char **ret_reason) {
        switch (msg->type) {
        case VU_IOTLB_UPDATE:
                if (msg->size == 0)
                        return fail(ret_reason, "IOTLB update of size 0", -EINVAL);
                if (msg->iova + (msg->size - 1) < msg->iova || msg->uaddr + (msg->size - 1) < msg->uaddr)
                        return fail(ret_reason, "IOTLB update wraps around the address space", -EINVAL);
                if (msg->perm == 0 || msg->perm > VU_ACCESS_RW)
                        return fail(ret_reason, "IOTLB update without a valid permission", -EINVAL);
                return 0;
        case VU_IOTLB_INVALIDATE:
                /* Size 0 is a no-op (as DPDK has it); a range past the end stops at the end. */
                return 0;
        default:
                return fail(ret_reason, "IOTLB message from a front-end neither an UPDATE nor an INVALIDATE", -EINVAL);
        }
}

/* First entry whose last byte is >= iova. */
static unsigned lower_bound(const Iotlb *t, uint64_t iova) {
        unsigned lo = 0, hi = t->n;
        while (lo < hi) {
                unsigned mid = lo + (hi - lo) / 2;
                if (last_of(&t->entries[mid]) < iova)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

static int reserve(Iotlb *t, unsigned n) {
        if (n <= t->allocated)
                return 0;
        unsigned a = t->allocated ? t->allocated * 2 : 16;
        while (a < n)
                a *= 2;
        if (a > IOTLB_SHADOW_MAX_ENTRIES)
                a = IOTLB_SHADOW_MAX_ENTRIES;
        IotlbEntry *e = realloc(t->entries, a * sizeof(IotlbEntry));
        if (!e)
                return -ENOMEM;
        t->entries = e;
        t->allocated = a;
        return 0;
}

static void insert_at(Iotlb *t, unsigned i, const IotlbEntry *e) {
        memmove(&t->entries[i + 1], &t->entries[i], (t->n - i) * sizeof(IotlbEntry));
        t->entries[i] = *e;
        t->n++;
}

static void remove_at(Iotlb *t, unsigned i, unsigned count) {
        memmove(&t->entries[i], &t->entries[i + count], (t->n - i - count) * sizeof(IotlbEntry));
        t->n -= count;
}

/* Removes [first, last] from the table: entries inside go, entries across an end are cut. */
static void invalidate(Iotlb *t, uint64_t first, uint64_t last) {
        unsigned i = lower_bound(t, first);

        while (i < t->n && t->entries[i].iova <= last) {
                IotlbEntry *e = &t->entries[i];
                uint64_t e_last = last_of(e);

                if (e->iova < first && e_last > last) {
                        /* a hole in the middle: two entries, or none when there is no room */
                        IotlbEntry tail = *e;
                        tail.iova = last + 1;
                        tail.size = e_last - last;
                        tail.uaddr = e->uaddr + (last + 1 - e->iova);
                        if (t->n >= IOTLB_SHADOW_MAX_ENTRIES || reserve(t, t->n + 1) < 0) {
                                remove_at(t, i, 1);
                                return;
                        }
                        e = &t->entries[i];
                        e->size = first - e->iova;
                        insert_at(t, i + 1, &tail);
                        return;
                }
                if (e->iova < first) {                  /* keep the head */
                        e->size = first - e->iova;
                        i++;
                } else if (e_last > last) {             /* keep the tail */
                        e->uaddr += last + 1 - e->iova;
                        e->size = e_last - last;
                        e->iova = last + 1;
                        return;
                } else
                        remove_at(t, i, 1);
        }
}

bool iotlb_entry_in_memory(const IotlbEntry *e, const GuestMemory *memory) {
        return guest_memory_translate(memory, e->uaddr, e->size) != NULL;
}

int iotlb_apply(Iotlb *t, const GuestMemory *memory, const VuIotlbMsg *msg, const char **ret_reason) {
        int r = iotlb_check_message(msg, ret_reason);
        if (r < 0)
                return r;

        if (msg->type == VU_IOTLB_INVALIDATE) {
                if (msg->size == 0)
                        return 0;
                uint64_t last = msg->iova + (msg->size - 1);
                invalidate(t, msg->iova, last < msg->iova ? UINT64_MAX : last);
                return 0;
        }

        IotlbEntry e = { .iova = msg->iova, .size = msg->size, .uaddr = msg->uaddr, .perm = msg->perm };
        /* What it covers is the front-end's to redefine, kept or not. */
        invalidate(t, e.iova, last_of(&e));
        if (!iotlb_entry_in_memory(&e, memory)) {
                t->not_kept++;
                return fail(ret_reason, "IOTLB update outside the memory table: not kept", -ERANGE);
        }
        if (t->n >= IOTLB_SHADOW_MAX_ENTRIES) {
                t->not_kept++;
                return fail(ret_reason, "IOTLB shadow full (4096 entries): update not kept", -ENOSPC);
        }
        if (reserve(t, t->n + 1) < 0)
                return fail(ret_reason, "out of memory", -ENOMEM);
        insert_at(t, lower_bound(t, e.iova), &e);
        return 0;
}

int iotlb_translate(const Iotlb *t, uint64_t iova, uint64_t len, uint64_t *ret_uaddr) {
        if (len == 0 || iova + (len - 1) < iova)
                return -EINVAL;
        uint64_t last = iova + (len - 1);
        unsigned i = lower_bound(t, iova);
        if (i >= t->n || t->entries[i].iova > iova)
                return -EFAULT;

        const IotlbEntry *e = &t->entries[i];
        uint64_t uaddr = e->uaddr + (iova - e->iova);
        /* Walk on while the range goes past this entry and the next one continues it. */
        while (last_of(e) < last) {
                const IotlbEntry *next = i + 1 < t->n ? &t->entries[i + 1] : NULL;
                if (!next || next->iova != last_of(e) + 1 || next->uaddr != e->uaddr + e->size)
                        return -EFAULT;
                e = next;
                i++;
        }
        *ret_uaddr = uaddr;
        return 0;
}
