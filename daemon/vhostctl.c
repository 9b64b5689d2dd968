/* SPDX-License-Identifier: MIT */
/* vhostctl: asks vhost-recond about its ports over the control socket (Varlink). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "build-config.h"
#include "config.h"
#include "varlink.h"

enum {
        EXIT_OK = 0,
        EXIT_FAIL = 1,
        EXIT_USAGE = 2,
        EXIT_NOT_RUNNING = 3,
        EXIT_NO_SUCH_PORT = 4,
        EXIT_PERMISSION = 5,
        EXIT_NOT_CONNECTED = 6,
        EXIT_RELOAD_FAILED = 7,
};

static bool arg_json = false;
static const char *arg_socket = NULL;

static void help(void) {
        printf("vhostctl [--socket PATH] [--json] COMMAND\n\n"
               "Shows and controls the ports of vhost-recond.\n\n"
               "Commands:\n"
               "  list                          every port: link, front-end, back-end, replays\n"
               "  status PORT                   everything about one port\n"
               "  monitor                       follow link events as they happen\n"
               "  disconnect PORT frontend|backend\n"
               "                                close one side (the back-end is stopped cleanly\n"
               "                                first; the next back-end gets a full replay)\n"
               "  reload                        reload the configuration file\n"
               "  metrics [FILE]                the Prometheus text of GET /metrics; into FILE\n"
               "                                atomically (node_exporter's textfile collector)\n\n"
               "Options:\n"
               "  -s --socket PATH              control socket (default %s)\n"
               "  -j --json                     JSON output (monitor: one object per line)\n"
               "  -h --help                     this help\n"
               "     --version                  version\n\n"
               "Exit status: 0 done, 1 failed, 2 bad usage, 3 vhost-recond is not running,\n"
               "4 no such port, 5 permission denied, 6 that side is not connected, 7 reload failed.\n",
               CONFIG_DEFAULT_CONTROL);
}

static int connect_daemon(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd;

        if (strlen(arg_socket) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "vhostctl: socket path too long\n");
                exit(EXIT_USAGE);
        }
        strcpy(sa.sun_path, arg_socket);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                fprintf(stderr, "vhostctl: cannot reach vhost-recond at %s: %s\n", arg_socket, strerror(errno));
                exit(errno == EACCES ? EXIT_PERMISSION : EXIT_NOT_RUNNING);
        }
        return fd;
}

static void send_all(int fd, const char *buf, size_t size) {
        while (size > 0) {
                ssize_t n = send(fd, buf, size, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        fprintf(stderr, "vhostctl: sending failed: %s\n", strerror(errno));
                        exit(EXIT_FAIL);
                }
                buf += n;
                size -= n;
        }
}

/* The next reply; exits on errors of the daemon that map to exit codes. */
static json_object *recv_reply(int fd, VarlinkBuffer *b, bool *ret_continues) {
        for (;;) {
                char *msg = NULL;
                int r = varlink_buffer_next(b, &msg);
                if (r < 0) {
                        fprintf(stderr, "vhostctl: reply too large\n");
                        exit(EXIT_FAIL);
                }
                if (r > 0) {
                        json_object *params;
                        char *error;
                        if (varlink_reply_parse(msg, &params, &error, ret_continues) < 0) {
                                fprintf(stderr, "vhostctl: bad reply from vhost-recond\n");
                                exit(EXIT_FAIL);
                        }
                        free(msg);
                        if (!error)
                                return params;
                        int code = EXIT_FAIL;
                        json_object *v;
                        const char *detail = "";
                        if (strcmp(error, "io.vhostrecon.NoSuchPort") == 0)
                                code = EXIT_NO_SUCH_PORT;
                        else if (strcmp(error, "io.vhostrecon.PermissionDenied") == 0)
                                code = EXIT_PERMISSION, detail = " (needs root or the admin group)";
                        else if (strcmp(error, "io.vhostrecon.NotConnected") == 0)
                                code = EXIT_NOT_CONNECTED;
                        else if (strcmp(error, "io.vhostrecon.ReloadFailed") == 0)
                                code = EXIT_RELOAD_FAILED;
                        fprintf(stderr, "vhostctl: %s%s", error, detail);
                        if (json_object_object_get_ex(params, "reason", &v) ||
                            json_object_object_get_ex(params, "name", &v) ||
                            json_object_object_get_ex(params, "parameter", &v))
                                fprintf(stderr, ": %s", json_object_get_string(v));
                        fprintf(stderr, "\n");
                        exit(code);
                }
                char buf[65536];
                ssize_t n = recv(fd, buf, sizeof(buf), 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        fprintf(stderr, "vhostctl: vhost-recond closed the connection\n");
                        exit(EXIT_FAIL);
                }
                if (varlink_buffer_append(b, buf, n) < 0) {
                        fprintf(stderr, "vhostctl: reply too large\n");
                        exit(EXIT_FAIL);
                }
        }
}

static json_object *call(const char *method, json_object *params) {
        VarlinkBuffer b;
        size_t size;
        bool continues;
        int fd = connect_daemon();

        char *m = varlink_call_new(method, params, false, &size);
        send_all(fd, m, size);
        free(m);
        varlink_buffer_init(&b, 16u << 20);
        json_object *r = recv_reply(fd, &b, &continues);
        varlink_buffer_done(&b);
        close(fd);
        return r;
}

static uint64_t get_u64(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? json_object_get_uint64(v) : 0;
}

static const char *get_str(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v) : NULL;
}

static json_object *get_obj(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

static bool get_bool(json_object *o, const char *key) {
        json_object *v;
        return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v);
}

static char *fmt_usec(uint64_t us, char *buf, size_t size) {
        if (us == 0)
                snprintf(buf, size, "-");
        else if (us < 10000)
                snprintf(buf, size, "%" PRIu64 " µs", us);
        else if (us < 10000000)
                snprintf(buf, size, "%.1f ms", us / 1e3);
        else
                snprintf(buf, size, "%.1f s", us / 1e6);
        return buf;
}

static char *fmt_time(uint64_t realtime_usec, char *buf, size_t size) {
        time_t t = realtime_usec / 1000000;
        struct tm tm;
        if (realtime_usec == 0) {
                snprintf(buf, size, "-");
                return buf;
        }
        gmtime_r(&t, &tm);
        size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
        snprintf(buf + n, size - n, ".%06" PRIu64 "Z", realtime_usec % 1000000);
        return buf;
}

static void print_json(json_object *o) {
        printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE));
}

static char *side_summary(json_object *side, bool backend, char *buf, size_t size) {
        if (!get_bool(side, "connected"))
                snprintf(buf, size, "%s", backend ? get_str(side, "state") : "absent");
        else if (backend)
                snprintf(buf, size, "%s pid %" PRIu64, get_str(side, "state"), get_u64(side, "pid"));
        else
                snprintf(buf, size, "pid %" PRIu64, get_u64(side, "pid"));
        return buf;
}

static int cmd_list(void) {
        json_object *r = call("io.vhostrecon.ListPorts", NULL);
        json_object *ports = get_obj(r, "ports");

        if (arg_json) {
                print_json(r);
                json_object_put(r);
                return EXIT_OK;
        }
        printf("%-16s %-5s %-12s %-20s %-8s %-11s %-11s %s\n", "PORT", "LINK", "FRONT-END", "BACK-END",
               "REPLAYS", "LAST-REPLAY", "LAST-OUTAGE", "LAST-ERROR");
        for (size_t i = 0; ports && i < json_object_array_length(ports); i++) {
                json_object *p = json_object_array_get_idx(ports, i), *c = get_obj(p, "counters");
                char fe[64], be[64], rep[32], t1[32], t2[32];
                snprintf(rep, sizeof(rep), "%" PRIu64 "/%" PRIu64, get_u64(c, "replays_ok"), get_u64(c, "replays_failed"));
                const char *err = get_str(p, "last_error");
                printf("%-16s %-5s %-12s %-20s %-8s %-11s %-11s %s\n", get_str(p, "name"), get_str(p, "link"),
                       side_summary(get_obj(p, "frontend"), false, fe, sizeof(fe)),
                       side_summary(get_obj(p, "backend"), true, be, sizeof(be)), rep,
                       fmt_usec(get_u64(c, "last_replay_usec"), t1, sizeof(t1)),
                       fmt_usec(get_u64(c, "last_outage_usec"), t2, sizeof(t2)), err ? err : "-");
        }
        json_object_put(r);
        return EXIT_OK;
}

static void print_side(const char *label, json_object *s) {
        /* the back-end has a state (absent, probing, replaying, connected, stopping) */
        const char *state = get_str(s, "state");
        printf("  %-19s %s", label, state ? state : get_bool(s, "connected") ? "connected" : "absent");
        if (get_bool(s, "connected"))
                printf(", pid %" PRIu64 " uid %" PRIu64, get_u64(s, "pid"), get_u64(s, "uid"));
        printf(", %s (%s)\n", get_str(s, "path"), get_str(s, "mode"));
}

static void print_features(const char *label, json_object *f) {
        json_object *names = get_obj(f, "names");
        printf("  %-19s 0x%" PRIx64, label, get_u64(f, "value"));
        for (size_t i = 0; names && i < json_object_array_length(names); i++)
                printf("%s%s", i ? "," : " ", json_object_get_string(json_object_array_get_idx(names, i)));
        printf("\n");
}

static int cmd_status(const char *name) {
        json_object *params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string(name));
        json_object *r = call("io.vhostrecon.GetPort", params);
        json_object *p = get_obj(r, "port"), *c = get_obj(p, "counters");
        char t[64];

        if (arg_json) {
                print_json(p);
                json_object_put(r);
                return EXIT_OK;
        }
        printf("%s\n", get_str(p, "name"));
        printf("  %-19s %s since %s\n", "link:", get_str(p, "link"),
               fmt_time(get_u64(p, "link_changed_realtime_usec"), t, sizeof(t)));
        print_side("front-end:", get_obj(p, "frontend"));
        print_side("back-end:", get_obj(p, "backend"));
        print_features("features:", get_obj(p, "features"));
        print_features("protocol features:", get_obj(p, "protocol_features"));
        printf("  %-19s 0x%" PRIx64 "\n", "device status:", get_u64(p, "status"));
        printf("  %-19s %" PRIu64 " (%" PRIu64 " started)\n", "vrings:", get_u64(p, "vrings"), get_u64(p, "vrings_started"));
        printf("  %-19s %" PRIu64 "\n", "memory regions:", get_u64(p, "memory_regions"));
        printf("  %-19s %" PRIu64 " entries, %" PRIu64 " updates not kept\n", "IOTLB:", get_u64(p, "iotlb_entries"),
               get_u64(p, "iotlb_not_kept"));
        printf("  %-19s %" PRIu64 " ok, %" PRIu64 " failed, %" PRIu64 " incompatible\n", "replays:",
               get_u64(c, "replays_ok"), get_u64(c, "replays_failed"), get_u64(c, "incompatible"));
        printf("  %-19s front-end %" PRIu64 ", back-end %" PRIu64 ", refused %" PRIu64 ", failed %" PRIu64 "\n",
               "connects:", get_u64(c, "frontend_connects"), get_u64(c, "backend_connects"),
               get_u64(c, "refused_peers"), get_u64(c, "connect_failures"));
        printf("  %-19s %" PRIu64 "\n", "flood pauses:", get_u64(c, "throttled"));
        printf("  %-19s %s\n", "last replay:", fmt_usec(get_u64(c, "last_replay_usec"), t, sizeof(t)));
        printf("  %-19s %s\n", "last outage:", fmt_usec(get_u64(c, "last_outage_usec"), t, sizeof(t)));
        printf("  %-19s %s\n", "last error:", get_str(p, "last_error") ? get_str(p, "last_error") : "-");
        json_object_put(r);
        return EXIT_OK;
}

static int cmd_monitor(void) {
        VarlinkBuffer b;
        size_t size;
        bool continues = true;
        int fd = connect_daemon();

        char *m = varlink_call_new("io.vhostrecon.Monitor", NULL, true, &size);
        send_all(fd, m, size);
        free(m);
        varlink_buffer_init(&b, 1u << 20);
        setvbuf(stdout, NULL, _IOLBF, 0);
        while (continues) {
                json_object *r = recv_reply(fd, &b, &continues), *ev = get_obj(r, "event");
                if (!ev) {
                        json_object_put(r);
                        continue;
                }
                if (arg_json)
                        printf("%s\n", json_object_to_json_string_ext(ev, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                else {
                        char t[64];
                        printf("%s %s %s", fmt_time(get_u64(ev, "realtime_usec"), t, sizeof(t)), get_str(ev, "port"),
                               get_str(ev, "type"));
                        json_object_object_foreach(ev, key, val) {
                                if (strcmp(key, "type") == 0 || strcmp(key, "port") == 0 ||
                                    strcmp(key, "realtime_usec") == 0 || strcmp(key, "monotonic_usec") == 0)
                                        continue;
                                printf(" %s=%s", key, json_object_get_string(val));
                        }
                        printf("\n");
                }
                json_object_put(r);
        }
        varlink_buffer_done(&b);
        close(fd);
        return EXIT_OK;
}

static int cmd_disconnect(const char *name, const char *side) {
        if (strcmp(side, "frontend") != 0 && strcmp(side, "backend") != 0) {
                fprintf(stderr, "vhostctl: side must be 'frontend' or 'backend', not '%s'\n", side);
                return EXIT_USAGE;
        }
        json_object *params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string(name));
        json_object_object_add(params, "side", json_object_new_string(side));
        json_object_put(call("io.vhostrecon.Disconnect", params));
        if (arg_json)
                printf("{}\n");
        return EXIT_OK;
}

static int cmd_reload(void) {
        json_object_put(call("io.vhostrecon.Reload", NULL));
        if (arg_json)
                printf("{}\n");
        return EXIT_OK;
}

/* FILE whole or not at all: a temporary file beside it, renamed over it (node_exporter's
 * textfile collector may read at any moment). */
static int write_atomic(const char *path, const char *text) {
        size_t n = strlen(path), len = strlen(text);
        char *tmp = malloc(n + 16);
        int fd, r = 0;

        if (!tmp)
                return -ENOMEM;
        const char *slash = strrchr(path, '/');
        size_t dir = slash ? (size_t) (slash - path + 1) : 0;
        snprintf(tmp, n + 16, "%.*s.%s.XXXXXX", (int) dir, path, path + dir);
        fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0) {
                free(tmp);
                return -errno;
        }
        for (size_t off = 0; off < len && r == 0;) {
                ssize_t k = write(fd, text + off, len - off);
                if (k < 0 && errno != EINTR)
                        r = -errno;
                else if (k > 0)
                        off += k;
        }
        if (r == 0 && fchmod(fd, 0644) < 0)
                r = -errno;
        if (close(fd) < 0 && r == 0)
                r = -errno;
        if (r == 0 && rename(tmp, path) < 0)
                r = -errno;
        if (r < 0)
                (void) unlink(tmp);
        free(tmp);
        return r;
}

/* The text of GET /metrics, for node_exporter's textfile collector: to stdout, or into FILE
 * atomically (with --json: {"text": ...}). */
static int cmd_metrics(const char *file) {
        json_object *r = call("io.vhostrecon.Metrics", NULL);
        const char *text = get_str(r, "text");
        if (!text) {
                fprintf(stderr, "vhostctl: the reply has no metrics text\n");
                json_object_put(r);
                return EXIT_FAIL;
        }
        if (file) {
                int k = write_atomic(file, text);
                json_object_put(r);
                if (k < 0) {
                        fprintf(stderr, "vhostctl: cannot write %s: %s\n", file, strerror(-k));
                        return EXIT_FAIL;
                }
                return EXIT_OK;
        }
        if (arg_json)
                print_json(r);
        else if (fputs(text, stdout) == EOF || fflush(stdout) == EOF) {
                json_object_put(r);
                return EXIT_FAIL;
        }
        json_object_put(r);
        return EXIT_OK;
}

int main(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100 };
        static const struct option options[] = {
                { "socket",  required_argument, NULL, 's' },
                { "json",    no_argument,       NULL, 'j' },
                { "help",    no_argument,       NULL, 'h' },
                { "version", no_argument,       NULL, ARG_VERSION },
                {}
        };
        int c;

        signal(SIGPIPE, SIG_IGN);
        arg_socket = getenv("VHOST_RECON_CONTROL") ? getenv("VHOST_RECON_CONTROL") : CONFIG_DEFAULT_CONTROL;
        while ((c = getopt_long(argc, argv, "s:jh", options, NULL)) >= 0)
                switch (c) {
                case 's':
                        arg_socket = optarg;
                        break;
                case 'j':
                        arg_json = true;
                        break;
                case 'h':
                        help();
                        return EXIT_OK;
                case ARG_VERSION:
                        printf("vhostctl %s\n", VERSION);
                        return EXIT_OK;
                default:
                        return EXIT_USAGE;
                }

        int n = argc - optind;
        char **a = argv + optind;
        if (n == 1 && strcmp(a[0], "list") == 0)
                return cmd_list();
        if (n == 2 && strcmp(a[0], "status") == 0)
                return cmd_status(a[1]);
        if (n == 1 && strcmp(a[0], "monitor") == 0)
                return cmd_monitor();
        if (n == 3 && strcmp(a[0], "disconnect") == 0)
                return cmd_disconnect(a[1], a[2]);
        if (n == 1 && strcmp(a[0], "reload") == 0)
                return cmd_reload();
        if ((n == 1 || n == 2) && strcmp(a[0], "metrics") == 0)
                return cmd_metrics(n == 2 ? a[1] : NULL);
        fprintf(stderr, "vhostctl: %s; see vhostctl --help\n", n == 0 ? "no command given" : "unknown command or wrong arguments");
        return EXIT_USAGE;
}
