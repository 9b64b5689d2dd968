/* SPDX-License-Identifier: MIT */
#pragma once

/* /etc/vhost-recon.conf (libconfig syntax). Errors name the file and the line. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum SideMode {
        SIDE_SERVER,            /* vhost-recond listens */
        SIDE_CLIENT,            /* vhost-recond connects, and reconnects with backoff */
        _SIDE_MODE_MAX,
        _SIDE_MODE_INVALID = -22,
} SideMode;

typedef struct SideConfig {
        char *path;
        SideMode mode;
        uint32_t reconnect_ms;
} SideConfig;

typedef struct PortConfig {
        char *name;
        SideConfig frontend, backend;
        mode_t socket_mode;             /* 0: not set (0600 by default) */
        char *socket_group;
        uid_t *allow_uids;
        size_t n_allow_uids;
        gid_t *allow_gids;
        size_t n_allow_gids;
        bool features_set, protocol_features_set;
        uint64_t features, protocol_features;   /* answered before any back-end was seen */
        int line;                       /* where it was defined, for messages */
} PortConfig;

typedef struct Config {
        char *path;
        char *control;
        mode_t control_mode;            /* default 0660 */
        char *control_group;            /* group of the control socket: may read */
        char *admin_group;              /* may also disconnect and reload (besides uid 0) */
        char *bpf_link_map;             /* pinned BPF map with each port's link state */
        char *metrics;                  /* HTTP /metrics: "ADDRESS:PORT" or "socket"; NULL: off */
        uint32_t reply_timeout_ms;
        uint32_t replay_handoff_ms;     /* a replay waiting longer is served first; 0: off */
        PortConfig *ports;
        size_t n_ports;
} Config;

#define CONFIG_DEFAULT_PATH "/etc/vhost-recon.conf"
#define CONFIG_DEFAULT_CONTROL "/run/vhost-recon/control"
#define CONFIG_DEFAULT_REPLAY_HANDOFF_MS 2
#define CONFIG_DEFAULT_REPLY_TIMEOUT_MS 5000u
#define CONFIG_DEFAULT_RECONNECT_MS 100u
#define PORT_NAME_MAX 64

/* The `metrics` setting: "socket" (a socket unit's fd named "metrics") or "IPv4:PORT",
 * "[IPv6]:PORT", "*:PORT": 0 and the address, 1 for "socket", or -EINVAL. */
struct sockaddr_storage;
int config_parse_listen_address(const char *s, struct sockaddr_storage *ret, unsigned *ret_len);

/* 0, or a negative errno with "FILE:LINE: message" in err. */
int config_load(const char *path, Config **ret, char *err, size_t errlen);
int config_parse_string(const char *text, const char *name, Config **ret, char *err, size_t errlen);
Config *config_free(Config *c);

const PortConfig *config_find_port(const Config *c, const char *name);
bool port_name_is_valid(const char *name);
/* A port that the config does not list: /run/vhost-recon/NAME.sock (front-end) and
 * /run/vhost-recon/NAME.vswitch.sock (switch), both in server mode. */
int port_config_default(const char *name, PortConfig *ret);
int port_config_copy(PortConfig *dst, const PortConfig *src);
void port_config_done(PortConfig *p);
bool port_config_equal(const PortConfig *a, const PortConfig *b);

const char *side_mode_to_string(SideMode m);
SideMode side_mode_from_string(const char *s);
