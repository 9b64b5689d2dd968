/* SPDX-License-Identifier: MIT */
#pragma once

/* The IOTLB shadow: with ACCESS_PLATFORM and a vIOMMU, ring and buffer addresses are IOVAs,
 * and the front-end tells the back-end how they map to its own addresses with IOTLB_MSG
 * updates and invalidations. The shadow keeps the translations that are in force, so that
 * a ring's used index can be read after a back-end crash and a new back-end gets them in its
 * replay. Entries never overlap (a later update replaces what it covers) and are kept
 * sorted by IOVA. Bounded: past IOTLB_SHADOW_MAX_ENTRIES an update is not kept (-ENOSPC);
 * that only costs the next back-end a miss, which the front-end answers again. */

#include <stdbool.h>
#include <stdint.h>

#include "guest-memory.h"
#include "vhost-user.h"

/* DPDK 22.11 keeps 2048 entries per virtqueue; twice that covers two queues' worth. */
#define IOTLB_SHADOW_MAX_ENTRIES 4096u

typedef struct IotlbEntry {
        uint64_t iova, size, uaddr;
        uint8_t perm;
} IotlbEntry;

typedef struct Iotlb {
        IotlbEntry *entries;    /* sorted by iova, disjoint */
        unsigned n, allocated;
        uint64_t not_kept;      /* updates refused for the bound or outside memory */
} Iotlb;

void iotlb_init(Iotlb *t);
void iotlb_clear(Iotlb *t);

/* Checks an IOTLB_MSG from a front-end on its own: type UPDATE or INVALIDATE, a permission
 * for an update, no wrap-around for an update. -EINVAL with *ret_reason. */
int iotlb_check_message(const VuIotlbMsg *msg, const char **ret_reason);

/* Applies a checked UPDATE or INVALIDATE. An update whose front-end range is not inside the
 * memory table (-ERANGE), or that would pass the bound (-ENOSPC), is not kept; what it
 * overlapped is invalidated all the same (the front-end changed that mapping). An
 * invalidation always succeeds: an entry it would split in two when the table is full is
 * dropped whole. */
int iotlb_apply(Iotlb *t, const GuestMemory *memory, const VuIotlbMsg *msg, const char **ret_reason);

/* The front-end address for [iova, iova+len): the range must be wholly covered by entries
 * that are contiguous in both address spaces. -EFAULT when it is not (a miss). */
int iotlb_translate(const Iotlb *t, uint64_t iova, uint64_t len, uint64_t *ret_uaddr);

/* Entries whose front-end range lies in the memory table now (what a back-end would accept). */
bool iotlb_entry_in_memory(const IotlbEntry *e, const GuestMemory *memory);
