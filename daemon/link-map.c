/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "build-config.h"
#include "link-map.h"
#include "listener.h"
#include "log.h"

#if HAVE_LIBBPF
#include <bpf/bpf.h>

struct LinkMap {
        int fd;
        char *path;
};

static bool layout_matches(int fd) {
        struct bpf_map_info info = {};
        uint32_t len = sizeof(info);
        if (bpf_obj_get_info_by_fd(fd, &info, &len) < 0)
                return false;
        return info.type == BPF_MAP_TYPE_ARRAY && info.key_size == sizeof(uint32_t) &&
               info.value_size == sizeof(struct vhost_recon_link) && info.max_entries == LINK_MAP_ENTRIES;
}

LinkMap *link_map_open(const char *path) {
        LinkMap *m;
        int fd, r;

        fd = bpf_obj_get(path);
        bool reused = fd >= 0;
        if (fd >= 0 && !layout_matches(fd)) {
                log_warning("bpf_link_map %s has another layout; replacing it", path);
                close(fd);
                (void) unlink(path);
                fd = -1;
                reused = false;
        }
        if (fd < 0) {
                LIBBPF_OPTS(bpf_map_create_opts, opts);
                fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "vhost_recon_lnk", sizeof(uint32_t),
                                    sizeof(struct vhost_recon_link), LINK_MAP_ENTRIES, &opts);
                if (fd < 0) {
                        log_warning_errno(errno, "Cannot create the BPF link map (%m); going on without it");
                        return NULL;
                }
                r = mkdir_parents(path);
                if (r < 0 || bpf_obj_pin(fd, path) < 0) {
                        log_warning_errno(r < 0 ? r : errno, "Cannot pin the BPF link map at %s (%m; is bpffs "
                                          "mounted there?); going on without it", path);
                        close(fd);
                        return NULL;
                }
        }
        m = calloc(1, sizeof(LinkMap));
        if (!m || !(m->path = strdup(path))) {
                free(m);
                close(fd);
                return NULL;
        }
        m->fd = fd;
        /* A map left by an earlier run: slots of ports that no longer exist must not look alive. */
        for (uint32_t i = 0; reused && i < LINK_MAP_ENTRIES; i++)
                (void) link_map_clear(m, i);
        log_info("BPF link map pinned at %s", path);
        return m;
}

LinkMap *link_map_free(LinkMap *m) {
        if (!m)
                return NULL;
        close(m->fd);
        free(m->path);
        free(m);
        return NULL;
}

int link_map_update(LinkMap *m, uint32_t slot, const char *name, bool up, uint64_t generation, uint64_t changed_ns) {
        struct vhost_recon_link v = { .slot = slot, .link_up = up, .generation = generation, .changed_ns = changed_ns };

        if (!m || slot >= LINK_MAP_ENTRIES)
                return -EINVAL;
        strncpy(v.name, name, sizeof(v.name) - 1);
        return bpf_map_update_elem(m->fd, &slot, &v, BPF_ANY) < 0 ? -errno : 0;
}

int link_map_clear(LinkMap *m, uint32_t slot) {
        struct vhost_recon_link v = { .slot = slot };
        if (!m || slot >= LINK_MAP_ENTRIES)
                return -EINVAL;
        return bpf_map_update_elem(m->fd, &slot, &v, BPF_ANY) < 0 ? -errno : 0;
}

#else

LinkMap *link_map_open(const char *path) {
        log_warning("bpf_link_map is set, but vhost-recond was built without libbpf; going on without it");
        return NULL;
}
LinkMap *link_map_free(LinkMap *m) {
        return NULL;
}
int link_map_update(LinkMap *m, uint32_t slot, const char *name, bool up, uint64_t generation, uint64_t changed_ns) {
        return -EOPNOTSUPP;
}
int link_map_clear(LinkMap *m, uint32_t slot) {
        return -EOPNOTSUPP;
}
#endif
