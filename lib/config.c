/* SPDX-License-Identifier: MIT */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <libconfig.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"
#include "macro.h"

static const char *const side_mode_table[_SIDE_MODE_MAX] = {
        [SIDE_SERVER] = "server",
        [SIDE_CLIENT] = "client",
};

const char *side_mode_to_string(SideMode m) {
        return m >= 0 && m < _SIDE_MODE_MAX ? side_mode_table[m] : NULL;
}

SideMode side_mode_from_string(const char *s) {
        for (int i = 0; i < _SIDE_MODE_MAX; i++)
                if (s && strcmp(s, side_mode_table[i]) == 0)
                        return i;
        return _SIDE_MODE_INVALID;
}

bool port_name_is_valid(const char *name) {
        size_t n = strlen(name);
        if (n == 0 || n > PORT_NAME_MAX)
                return false;
        for (const char *p = name; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                      *p == '-' || *p == '_' || *p == '.' || *p == '@' || *p == ':'))
                        return false;
        return name[0] != '.';
}

static void side_done(SideConfig *s) {
        free(s->path);
        s->path = NULL;
}

void port_config_done(PortConfig *p) {
        free(p->name);
        side_done(&p->frontend);
        side_done(&p->backend);
        free(p->socket_group);
        free(p->allow_uids);
        free(p->allow_gids);
        memset(p, 0, sizeof(*p));
}

int config_parse_listen_address(const char *s, struct sockaddr_storage *ret, unsigned *ret_len) {
        struct sockaddr_storage ss = {};
        char host[INET6_ADDRSTRLEN + 2];
        const char *colon;
        unsigned len;

        if (strcmp(s, "socket") == 0)
                return 1;
        colon = strrchr(s, ':');
        if (!colon || colon == s || (size_t) (colon - s) >= sizeof(host))
                return -EINVAL;
        char *end;
        errno = 0;
        unsigned long port = strtoul(colon + 1, &end, 10);
        if (!colon[1] || *end || errno || port == 0 || port > 65535 || !isdigit((unsigned char) colon[1]))
                return -EINVAL;
        memcpy(host, s, colon - s);
        host[colon - s] = 0;
        if (host[0] == '[') {
                size_t n = strlen(host);
                if (n < 3 || host[n - 1] != ']')
                        return -EINVAL;
                host[n - 1] = 0;
                struct sockaddr_in6 *a = (struct sockaddr_in6 *) &ss;
                a->sin6_family = AF_INET6;
                a->sin6_port = htons(port);
                if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
                        return -EINVAL;
                len = sizeof(*a);
        } else {
                struct sockaddr_in *a = (struct sockaddr_in *) &ss;
                a->sin_family = AF_INET;
                a->sin_port = htons(port);
                if (strcmp(host, "*") == 0)
                        a->sin_addr.s_addr = htonl(INADDR_ANY);
                else if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
                        return -EINVAL;
                len = sizeof(*a);
        }
        if (ret)
                *ret = ss;
        if (ret_len)
                *ret_len = len;
        return 0;
}

Config *config_free(Config *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_ports; i++)
                port_config_done(&c->ports[i]);
        free(c->ports);
        free(c->path);
        free(c->control);
        free(c->control_group);
        free(c->admin_group);
        free(c->bpf_link_map);
        free(c->metrics);
        free(c);
        return NULL;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(Config *, config_free);

static char *strdup_or_null(const char *s) {
        return s ? strdup(s) : NULL;
}

int port_config_copy(PortConfig *dst, const PortConfig *src) {
        *dst = *src;
        dst->name = strdup_or_null(src->name);
        dst->frontend.path = strdup_or_null(src->frontend.path);
        dst->backend.path = strdup_or_null(src->backend.path);
        dst->socket_group = strdup_or_null(src->socket_group);
        dst->allow_uids = NULL;
        dst->allow_gids = NULL;
        if (src->n_allow_uids) {
                dst->allow_uids = malloc(sizeof(uid_t) * src->n_allow_uids);
                if (dst->allow_uids)
                        memcpy(dst->allow_uids, src->allow_uids, sizeof(uid_t) * src->n_allow_uids);
        }
        if (src->n_allow_gids) {
                dst->allow_gids = malloc(sizeof(gid_t) * src->n_allow_gids);
                if (dst->allow_gids)
                        memcpy(dst->allow_gids, src->allow_gids, sizeof(gid_t) * src->n_allow_gids);
        }
        if (!dst->name || !dst->frontend.path || !dst->backend.path ||
            (src->socket_group && !dst->socket_group) ||
            (src->n_allow_uids && !dst->allow_uids) || (src->n_allow_gids && !dst->allow_gids)) {
                port_config_done(dst);
                return -ENOMEM;
        }
        return 0;
}

static bool str_eq(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static bool side_equal(const SideConfig *a, const SideConfig *b) {
        return str_eq(a->path, b->path) && a->mode == b->mode && a->reconnect_ms == b->reconnect_ms;
}

bool port_config_equal(const PortConfig *a, const PortConfig *b) {
        return str_eq(a->name, b->name) && side_equal(&a->frontend, &b->frontend) &&
               side_equal(&a->backend, &b->backend) && a->socket_mode == b->socket_mode &&
               str_eq(a->socket_group, b->socket_group) &&
               a->n_allow_uids == b->n_allow_uids &&
               (a->n_allow_uids == 0 || memcmp(a->allow_uids, b->allow_uids, sizeof(uid_t) * a->n_allow_uids) == 0) &&
               a->n_allow_gids == b->n_allow_gids &&
               (a->n_allow_gids == 0 || memcmp(a->allow_gids, b->allow_gids, sizeof(gid_t) * a->n_allow_gids) == 0) &&
               a->features_set == b->features_set && a->features == b->features &&
               a->protocol_features_set == b->protocol_features_set &&
               a->protocol_features == b->protocol_features;
}

int port_config_default(const char *name, PortConfig *ret) {
        PortConfig p = {
                .frontend.mode = SIDE_SERVER,
                .backend.mode = SIDE_SERVER,
                .frontend.reconnect_ms = CONFIG_DEFAULT_RECONNECT_MS,
                .backend.reconnect_ms = CONFIG_DEFAULT_RECONNECT_MS,
        };

        if (!port_name_is_valid(name))
                return -EINVAL;
        p.name = strdup(name);
        if (asprintf(&p.frontend.path, "/run/vhost-recon/%s.sock", name) < 0)
                p.frontend.path = NULL;
        if (asprintf(&p.backend.path, "/run/vhost-recon/%s.vswitch.sock", name) < 0)
                p.backend.path = NULL;
        if (!p.name || !p.frontend.path || !p.backend.path) {
                port_config_done(&p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

const PortConfig *config_find_port(const Config *c, const char *name) {
        for (size_t i = 0; i < c->n_ports; i++)
                if (strcmp(c->ports[i].name, name) == 0)
                        return &c->ports[i];
        return NULL;
}

typedef struct Parser {
        const char *file;
        char *err;
        size_t errlen;
} Parser;

_printf_(3, 4)
static int error_at(Parser *p, const config_setting_t *s, const char *fmt, ...) {
        char msg[512];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        snprintf(p->err, p->errlen, "%s:%d: %s", p->file, s ? (int) config_setting_source_line(s) : 0, msg);
        return -EINVAL;
}

static int check_keys(Parser *p, const config_setting_t *group, const char *const *allowed) {
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *c = config_setting_get_elem(group, i);
                const char *name = config_setting_name(c);
                bool ok = false;
                for (const char *const *a = allowed; *a && !ok; a++)
                        ok = strcmp(*a, name) == 0;
                if (!ok)
                        return error_at(p, c, "unknown setting '%s'", name);
        }
        return 0;
}

static int get_string(Parser *p, const config_setting_t *group, const char *key, bool required, char **ret) {
        const config_setting_t *s = config_setting_get_member(group, key);
        if (!s) {
                if (required)
                        return error_at(p, group, "'%s' is missing", key);
                return 0;
        }
        if (config_setting_type(s) != CONFIG_TYPE_STRING)
                return error_at(p, s, "'%s' must be a string", key);
        free(*ret);
        *ret = strdup(config_setting_get_string(s));
        return *ret ? 0 : -ENOMEM;
}

static int get_uint(Parser *p, const config_setting_t *group, const char *key, uint64_t min, uint64_t max,
                    bool *ret_set, uint64_t *ret) {
        const config_setting_t *s = config_setting_get_member(group, key);
        if (!s)
                return 0;
        long long v;
        if (config_setting_type(s) == CONFIG_TYPE_INT)
                v = config_setting_get_int(s);
        else if (config_setting_type(s) == CONFIG_TYPE_INT64)
                v = config_setting_get_int64(s);
        else
                return error_at(p, s, "'%s' must be an integer", key);
        if (v < 0 || (uint64_t) v < min || (uint64_t) v > max)
                return error_at(p, s, "'%s' must be between %llu and %llu", key,
                                (unsigned long long) min, (unsigned long long) max);
        *ret = (uint64_t) v;
        if (ret_set)
                *ret_set = true;
        return 0;
}

static int get_mode(Parser *p, const config_setting_t *group, const char *key, mode_t *ret) {
        _cleanup_(freep) char *mode = NULL;
        char *end;
        int r;

        if ((r = get_string(p, group, key, false, &mode)) < 0 || !mode)
                return r;
        unsigned long m = strtoul(mode, &end, 8);
        if (*mode == 0 || *end || m == 0 || m > 0777)
                return error_at(p, config_setting_get_member(group, key),
                                "%s must be an octal mode like \"0660\", not \"%s\"", key, mode);
        *ret = (mode_t) m;
        return 0;
}

static int check_socket_path(Parser *p, const config_setting_t *s, const char *path) {
        if (path[0] != '/')
                return error_at(p, s, "path '%s' is not absolute", path);
        if (strlen(path) >= sizeof(((struct sockaddr_un *) NULL)->sun_path))
                return error_at(p, s, "path '%s' is too long for a unix socket", path);
        return 0;
}

static int parse_side(Parser *p, const config_setting_t *port, const char *key, SideConfig *ret) {
        static const char *const keys[] = { "path", "mode", "reconnect_ms", NULL };
        const config_setting_t *s = config_setting_get_member(port, key);
        _cleanup_(freep) char *mode = NULL;
        uint64_t v = CONFIG_DEFAULT_RECONNECT_MS;
        int r;

        if (!s)
                return error_at(p, port, "'%s' is missing", key);
        if (!config_setting_is_group(s))
                return error_at(p, s, "'%s' must be a group { path = ...; mode = ...; }", key);
        if ((r = check_keys(p, s, keys)) < 0)
                return r;
        if ((r = get_string(p, s, "path", true, &ret->path)) < 0)
                return r;
        if ((r = check_socket_path(p, config_setting_get_member(s, "path"), ret->path)) < 0)
                return r;
        if ((r = get_string(p, s, "mode", false, &mode)) < 0)
                return r;
        ret->mode = mode ? side_mode_from_string(mode) : SIDE_SERVER;
        if (ret->mode < 0)
                return error_at(p, config_setting_get_member(s, "mode"),
                                "mode must be \"server\" or \"client\", not \"%s\"", mode);
        if ((r = get_uint(p, s, "reconnect_ms", 1, 3600000, NULL, &v)) < 0)
                return r;
        ret->reconnect_ms = (uint32_t) v;
        return 0;
}

static int parse_id_list(Parser *p, const config_setting_t *port, const char *key, uint32_t **ret, size_t *ret_n) {
        const config_setting_t *s = config_setting_get_member(port, key);
        if (!s)
                return 0;
        if (!config_setting_is_array(s) && !config_setting_is_list(s))
                return error_at(p, s, "'%s' must be a list of numbers, like [ 0, 107 ]", key);
        int n = config_setting_length(s);
        uint32_t *ids = calloc(n ? n : 1, sizeof(uint32_t));
        if (!ids)
                return -ENOMEM;
        for (int i = 0; i < n; i++) {
                const config_setting_t *e = config_setting_get_elem(s, i);
                if (config_setting_type(e) != CONFIG_TYPE_INT || config_setting_get_int(e) < 0) {
                        free(ids);
                        return error_at(p, e, "'%s' entries must be non-negative numbers", key);
                }
                ids[i] = (uint32_t) config_setting_get_int(e);
        }
        *ret = ids;
        *ret_n = n;
        return 0;
}

static int parse_port(Parser *p, const config_setting_t *s, PortConfig *ret) {
        static const char *const keys[] = {
                "name", "frontend", "backend", "socket_mode", "socket_group", "allow_uids",
                "allow_gids", "features", "protocol_features", NULL
        };
        int r;

        ret->line = config_setting_source_line(s);
        if (!config_setting_is_group(s))
                return error_at(p, s, "each port must be a group { name = ...; ... }");
        if ((r = check_keys(p, s, keys)) < 0)
                return r;
        if ((r = get_string(p, s, "name", true, &ret->name)) < 0)
                return r;
        if (!port_name_is_valid(ret->name))
                return error_at(p, config_setting_get_member(s, "name"),
                                "port name '%s' is not valid (1-64 of A-Z a-z 0-9 - _ . @ :)", ret->name);
        if ((r = parse_side(p, s, "frontend", &ret->frontend)) < 0)
                return r;
        if ((r = parse_side(p, s, "backend", &ret->backend)) < 0)
                return r;
        if ((r = get_mode(p, s, "socket_mode", &ret->socket_mode)) < 0)
                return r;
        if ((r = get_string(p, s, "socket_group", false, &ret->socket_group)) < 0)
                return r;
        if ((r = parse_id_list(p, s, "allow_uids", (uint32_t **) &ret->allow_uids, &ret->n_allow_uids)) < 0)
                return r;
        if ((r = parse_id_list(p, s, "allow_gids", (uint32_t **) &ret->allow_gids, &ret->n_allow_gids)) < 0)
                return r;
        /* libconfig cuts an integer without the L suffix to 32 bits, silently; feature bits
         * above 31 (VERSION_1 is 32) would be lost */
        const config_setting_t *fs = config_setting_get_member(s, "features");
        if (fs && config_setting_type(fs) == CONFIG_TYPE_INT)
                return error_at(p, fs, "'features' is a 64-bit value: write it with an L suffix (e.g. 0x140000000L), "
                                "or libconfig keeps only its low 32 bits");
        if ((r = get_uint(p, s, "features", 0, UINT64_MAX, &ret->features_set, &ret->features)) < 0)
                return r;
        if ((r = get_uint(p, s, "protocol_features", 0, UINT64_MAX, &ret->protocol_features_set,
                          &ret->protocol_features)) < 0)
                return r;
        if (strcmp(ret->frontend.path, ret->backend.path) == 0)
                return error_at(p, s, "port '%s' uses the same path for front-end and back-end", ret->name);
        return 0;
}

static int parse(Parser *p, config_t *cfg, Config **ret) {
        static const char *const keys[] = {
                "control", "control_mode", "control_group", "admin_group", "bpf_link_map",
                "reply_timeout_ms", "replay_handoff_ms", "metrics", "ports", NULL
        };
        _cleanup_(config_freep) Config *c = calloc(1, sizeof(Config));
        const config_setting_t *root = config_root_setting(cfg), *ports;
        uint64_t v = CONFIG_DEFAULT_REPLY_TIMEOUT_MS;
        int r;

        if (!c)
                return -ENOMEM;
        if ((r = check_keys(p, root, keys)) < 0)
                return r;
        if ((r = get_string(p, root, "control", false, &c->control)) < 0)
                return r;
        if (!c->control && !(c->control = strdup(CONFIG_DEFAULT_CONTROL)))
                return -ENOMEM;
        if ((r = check_socket_path(p, config_setting_get_member(root, "control"), c->control)) < 0)
                return r;
        c->control_mode = 0660;
        if ((r = get_mode(p, root, "control_mode", &c->control_mode)) < 0)
                return r;
        if ((r = get_string(p, root, "control_group", false, &c->control_group)) < 0 ||
            (r = get_string(p, root, "admin_group", false, &c->admin_group)) < 0 ||
            (r = get_string(p, root, "bpf_link_map", false, &c->bpf_link_map)) < 0)
                return r;
        if (c->bpf_link_map && c->bpf_link_map[0] != '/')
                return error_at(p, config_setting_get_member(root, "bpf_link_map"),
                                "bpf_link_map '%s' is not an absolute path", c->bpf_link_map);
        if ((r = get_string(p, root, "metrics", false, &c->metrics)) < 0)
                return r;
        if (c->metrics && config_parse_listen_address(c->metrics, NULL, NULL) < 0)
                return error_at(p, config_setting_get_member(root, "metrics"),
                                "metrics '%s' is not \"socket\" nor ADDRESS:PORT (e.g. \"127.0.0.1:9477\", \"[::1]:9477\")",
                                c->metrics);
        if ((r = get_uint(p, root, "reply_timeout_ms", 1, 600000, NULL, &v)) < 0)
                return r;
        c->reply_timeout_ms = (uint32_t) v;
        v = CONFIG_DEFAULT_REPLAY_HANDOFF_MS;
        if ((r = get_uint(p, root, "replay_handoff_ms", 0, 60000, NULL, &v)) < 0)
                return r;
        c->replay_handoff_ms = (uint32_t) v;

        ports = config_setting_get_member(root, "ports");
        if (ports) {
                if (!config_setting_is_list(ports) && !config_setting_is_array(ports))
                        return error_at(p, ports, "'ports' must be a list: ports = ( { ... }, { ... } );");
                int n = config_setting_length(ports);
                c->ports = calloc(n ? n : 1, sizeof(PortConfig));
                if (!c->ports)
                        return -ENOMEM;
                for (int i = 0; i < n; i++) {
                        const config_setting_t *s = config_setting_get_elem(ports, i);
                        r = parse_port(p, s, &c->ports[i]);
                        c->n_ports = i + 1;
                        if (r < 0)
                                return r;
                        for (int j = 0; j < i; j++) {
                                const PortConfig *a = &c->ports[j], *b = &c->ports[i];
                                if (strcmp(a->name, b->name) == 0)
                                        return error_at(p, s, "port '%s' is defined twice (first at line %d)",
                                                        b->name, a->line);
                                const char *pa[] = { a->frontend.path, a->backend.path };
                                const char *pb[] = { b->frontend.path, b->backend.path };
                                for (int x = 0; x < 2; x++)
                                        for (int y = 0; y < 2; y++)
                                                if (strcmp(pa[x], pb[y]) == 0)
                                                        return error_at(p, s, "path '%s' is used by ports '%s' and '%s'",
                                                                        pb[y], a->name, b->name);
                        }
                }
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static int finish(Parser *p, config_t *cfg, int ok, Config **ret) {
        int r;

        if (!ok) {
                const char *file = config_error_file(cfg);
                snprintf(p->err, p->errlen, "%s:%d: %s", file ? file : p->file,
                         config_error_line(cfg), config_error_text(cfg));
                r = -EINVAL;
        } else
                r = parse(p, cfg, ret);
        config_destroy(cfg);
        if (r == -ENOMEM)
                snprintf(p->err, p->errlen, "%s: out of memory", p->file);
        return r;
}

int config_parse_string(const char *text, const char *name, Config **ret, char *err, size_t errlen) {
        Parser p = { .file = name, .err = err, .errlen = errlen };
        config_t cfg;

        config_init(&cfg);
        return finish(&p, &cfg, config_read_string(&cfg, text) == CONFIG_TRUE, ret);
}

int config_load(const char *path, Config **ret, char *err, size_t errlen) {
        Parser p = { .file = path, .err = err, .errlen = errlen };
        Config *c = NULL;
        config_t cfg;
        FILE *f;
        int r;

        f = fopen(path, "re");
        if (!f) {
                r = -errno;
                snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-r));
                return r;
        }
        config_init(&cfg);
        r = finish(&p, &cfg, config_read(&cfg, f) == CONFIG_TRUE, &c);
        fclose(f);
        if (r < 0)
                return r;
        if (!(c->path = strdup(path))) {
                config_free(c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}
