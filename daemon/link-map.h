/* SPDX-License-Identifier: MIT */
#pragma once

/* The optional pinned BPF map with each port's link state (bpf_link_map = PATH), for a
 * switch's eBPF data path or `bpftool map dump pinned PATH`.
 *
 * BPF_MAP_TYPE_ARRAY, key: __u32 slot (the port's stable index, see vhostctl status),
 * value: struct vhost_recon_link below, LINK_MAP_ENTRIES entries. A slot whose name is
 * empty is unused. */

#include <stdbool.h>
#include <stdint.h>

#define LINK_MAP_ENTRIES 4096
#define LINK_MAP_NAME_MAX 64

struct vhost_recon_link {
        uint32_t slot;                  /* = the key */
        uint32_t link_up;               /* 1: up, 0: down */
        uint64_t generation;            /* +1 on every change of this port's link */
        uint64_t changed_ns;            /* CLOCK_MONOTONIC of the last change (as bpf_ktime_get_ns) */
        char name[LINK_MAP_NAME_MAX];   /* the port's name, NUL-padded */
};

typedef struct LinkMap LinkMap;

/* Creates (or reuses, when its layout matches) the map pinned at path. Returns NULL after
 * saying once why not (no privileges, no bpffs); the daemon goes on without it. */
LinkMap *link_map_open(const char *path);
LinkMap *link_map_free(LinkMap *m);
int link_map_update(LinkMap *m, uint32_t slot, const char *name, bool up, uint64_t generation, uint64_t changed_ns);
int link_map_clear(LinkMap *m, uint32_t slot);
