/* SPDX-License-Identifier: MIT */
/* The control socket and vhostctl against a live daemon: link state in list and status,
 * monitor events in order, GetInfo, disconnect (a clean stop, then a full replay), access
 * rules by uid, garbage and oversized requests, exit codes, reload. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control-client.h"
#include "daemon-harness.h"
#include "macro.h"
#include "peer.h"
#include "tests.h"

static const char *vhostctl_path(void) {
        return getenv("VHOSTCTL") ? getenv("VHOSTCTL") : VHOSTCTL_PATH;
}

static void control_path(const Daemon *d, char *buf, size_t size) {
        snprintf(buf, size, "%s/control", d->dir);
}

/* Runs vhostctl; returns its exit status and its stdout in *ret_out (caller frees). */
static int vhostctl(const Daemon *d, char **ret_out, const char *args) {
        char cmd[512], ctl[128];
        control_path(d, ctl, sizeof(ctl));
        snprintf(cmd, sizeof(cmd), "'%s' --socket '%s' %s", vhostctl_path(), ctl, args);
        FILE *f = popen(cmd, "r");
        ASSERT(f);
        char *out = NULL;
        size_t n = 0;
        if (getdelim(&out, &n, 0, f) < 0) {
                free(out);
                out = strdup("");
        }
        int status = pclose(f);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static json_object *get_port(const Daemon *d, const char *name) {
        char ctl[128];
        control_path(d, ctl, sizeof(ctl));
        json_object *params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string(name));
        json_object *r = control_call_ok(ctl, "io.vhostrecon.GetPort", params);
        json_object *p = json_object_get(json_object_object_get(r, "port"));
        json_object_put(r);
        return p;
}

static const char *jstr(json_object *o, const char *path1, const char *path2) {
        json_object *v = json_object_object_get(o, path1);
        if (path2)
                v = json_object_object_get(v, path2);
        return json_object_get_string(v);
}

static int64_t jint(json_object *o, const char *path1, const char *path2) {
        json_object *v = json_object_object_get(o, path1);
        if (path2)
                v = json_object_object_get(v, path2);
        return json_object_get_int64(v);
}

static void expect_event(ControlClient *mon, const char *type, const char *port) {
        json_object *r;
        char *error;
        bool continues;
        ASSERT_EQ(control_client_reply(mon, 5000, &r, &error, &continues), 0);
        ASSERT(!error);
        ASSERT(continues);
        json_object *ev = json_object_object_get(r, "event");
        fprintf(stderr, "   event %s\n", json_object_to_json_string(ev));
        ASSERT_STREQ(jstr(ev, "type", NULL), type);
        ASSERT_STREQ(jstr(ev, "port", NULL), port);
        ASSERT(jint(ev, "monotonic_usec", NULL) > 0);
        ASSERT(jint(ev, "realtime_usec", NULL) > 1600000000000000LL);
        json_object_put(r);
}

static void test_link_state_and_events(void) {
        Daemon d;
        char fe_path[128], be_path[128], ctl[128];
        FrontendPeer fe;
        BackendPeer be, b2;
        ControlClient mon;

        daemon_start(&d, 2, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        control_path(&d, ctl, sizeof(ctl));
        ASSERT_EQ(control_client_open(&mon, ctl), 0);
        ASSERT_EQ(control_client_call(&mon, "io.vhostrecon.Monitor", NULL, true), 0);
        usleep(50000);

        json_object *p = get_port(&d, "port0");
        ASSERT_STREQ(jstr(p, "link", NULL), "down");
        ASSERT_STREQ(jstr(p, "backend", "state"), "absent");
        ASSERT(!json_object_get_boolean(json_object_object_get(json_object_object_get(p, "frontend"), "connected")));
        json_object_put(p);

        ASSERT_EQ(peers_setup_device(fe_path, be_path, &fe, &be, 2), 0);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
        p = get_port(&d, "port0");
        ASSERT_STREQ(jstr(p, "link", NULL), "up");
        ASSERT_STREQ(jstr(p, "backend", "state"), "connected");
        ASSERT_EQ(jint(p, "frontend", "pid"), getpid());
        ASSERT_EQ(jint(p, "vrings", NULL), 2);
        ASSERT_EQ(jint(p, "vrings_started", NULL), 2);
        ASSERT_EQ(jint(p, "memory_regions", NULL), 1);
        ASSERT_EQ(jint(p, "status", NULL), 0xf);
        ASSERT_EQ((uint64_t) jint(p, "features", "value"), NET_TEST_FEATURES);
        ASSERT_CONTAINS(json_object_to_json_string(json_object_object_get(p, "features")), "\"IN_ORDER\"");
        ASSERT_CONTAINS(json_object_to_json_string(json_object_object_get(p, "protocol_features")), "\"REPLY_ACK\"");
        json_object_put(p);

        backend_peer_close(&be);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));
        p = get_port(&d, "port0");
        ASSERT_STREQ(jstr(p, "link", NULL), "down");
        ASSERT_STREQ(jstr(p, "backend", "state"), "absent");
        json_object_put(p);

        ASSERT_EQ(backend_peer_open(&b2, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b2, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(daemon_log_wait(&d, "port0: link up", 2000));
        p = get_port(&d, "port0");
        ASSERT_STREQ(jstr(p, "link", NULL), "up");
        ASSERT_EQ(jint(p, "counters", "replays_ok"), 1);
        ASSERT_EQ(jint(p, "counters", "backend_connects"), 2);
        ASSERT_EQ(jint(p, "counters", "frontend_connects"), 1);
        ASSERT(jint(p, "counters", "last_replay_usec") > 0);
        ASSERT(jint(p, "counters", "last_outage_usec") > 0);
        json_object_put(p);
        backend_peer_close(&b2);
        ASSERT(daemon_log_wait(&d, "port0: link down", 2000));

        /* the events, in order */
        expect_event(&mon, "backend-connected", "port0");
        expect_event(&mon, "frontend-connected", "port0");
        expect_event(&mon, "link-up", "port0");
        expect_event(&mon, "backend-disconnected", "port0");
        expect_event(&mon, "link-down", "port0");
        expect_event(&mon, "backend-connected", "port0");
        expect_event(&mon, "replay-done", "port0");
        expect_event(&mon, "link-up", "port0");
        expect_event(&mon, "backend-disconnected", "port0");
        expect_event(&mon, "link-down", "port0");

        /* vhostctl shows the same as a human table */
        char *out;
        ASSERT_EQ(vhostctl(&d, &out, "list"), 0);
        fprintf(stderr, "%s", out);
        ASSERT_CONTAINS(out, "PORT");
        ASSERT_CONTAINS(out, "port0            down  pid ");
        ASSERT_CONTAINS(out, "port1            down  absent");
        free(out);
        ASSERT_EQ(vhostctl(&d, &out, "status port0"), 0);
        ASSERT_CONTAINS(out, "1 ok, 0 failed, 0 incompatible");
        ASSERT_CONTAINS(out, "VERSION_1");
        free(out);
        ASSERT_EQ(vhostctl(&d, &out, "--json list"), 0);
        json_object *j = json_tokener_parse(out);
        ASSERT(j);
        ASSERT_EQ(json_object_array_length(json_object_object_get(j, "ports")), 2);
        json_object_put(j);
        free(out);

        control_client_close(&mon);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

static void test_get_info_and_errors(void) {
        Daemon d;
        char ctl[128];
        ControlClient c;
        json_object *r;
        char *error;

        daemon_start(&d, 1, NULL);
        control_path(&d, ctl, sizeof(ctl));
        r = control_call_ok(ctl, "org.varlink.service.GetInfo", NULL);
        ASSERT_STREQ(jstr(r, "product", NULL), "vhost-recond");
        ASSERT_CONTAINS(json_object_to_json_string(json_object_object_get(r, "interfaces")), "io.vhostrecon");
        json_object_put(r);
        json_object *params = json_object_new_object();
        json_object_object_add(params, "interface", json_object_new_string("io.vhostrecon"));
        r = control_call_ok(ctl, "org.varlink.service.GetInterfaceDescription", params);
        ASSERT_CONTAINS(jstr(r, "description", NULL), "method ListPorts() -> (ports: []PortSummary)");
        json_object_put(r);

        struct { const char *method; const char *error; } cases[] = {
                { "io.vhostrecon.Nope", "org.varlink.service.MethodNotFound" },
                { "org.example.Thing", "org.varlink.service.InterfaceNotFound" },
                { "io.vhostrecon.GetPort", "org.varlink.service.InvalidParameter" },
                { "io.vhostrecon.Monitor", "org.varlink.service.InvalidParameter" },   /* without "more" */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                ASSERT_EQ(control_client_open(&c, ctl), 0);
                ASSERT_EQ(control_client_call(&c, cases[i].method, NULL, false), 0);
                ASSERT_EQ(control_client_reply(&c, 5000, &r, &error, NULL), 0);
                ASSERT_STREQ(error, cases[i].error);
                free(error);
                json_object_put(r);
                control_client_close(&c);
        }
        params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string("port9"));
        ASSERT_EQ(control_client_open(&c, ctl), 0);
        ASSERT_EQ(control_client_call(&c, "io.vhostrecon.GetPort", params, false), 0);
        ASSERT_EQ(control_client_reply(&c, 5000, &r, &error, NULL), 0);
        ASSERT_STREQ(error, "io.vhostrecon.NoSuchPort");
        ASSERT_STREQ(jstr(r, "name", NULL), "port9");
        free(error);
        json_object_put(r);
        control_client_close(&c);

        /* exit codes: no such port is not the same as a daemon that is not running */
        ASSERT_EQ(vhostctl(&d, NULL, "status port9"), 4);
        ASSERT_EQ(vhostctl(&d, NULL, "frobnicate"), 2);
        ASSERT_EQ(vhostctl(&d, NULL, "disconnect port0 sideways"), 2);
        ASSERT_EQ(vhostctl(&d, NULL, "disconnect port0 backend"), 6);   /* not connected */
        ASSERT_EQ(daemon_stop(&d), 0);
        ASSERT_EQ(vhostctl(&d, NULL, "list"), 3);
}

static void test_disconnect(void) {
        Daemon d;
        char fe_path[128], be_path[128];
        FrontendPeer fe;
        BackendPeer be, b2;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(peers_setup_device(fe_path, be_path, &fe, &be, 2), 0);
        frontend_peer_set_used_idx(&fe, 0, 7);  /* behind what the back-end will answer */

        /* vhostctl waits for the daemon's answer, which comes before the stop completes */
        ASSERT_EQ(vhostctl(&d, NULL, "disconnect port0 backend"), 0);
        /* the back-end is stopped cleanly (GET_VRING_BASE per ring), then closed */
        ASSERT_EQ(backend_peer_wait_closed(&be, PEER_TIMEOUT_MS), 0);
        size_t i = backend_peer_find(&be, 0, VU_GET_VRING_BASE);
        ASSERT(i != SIZE_MAX);
        ASSERT_EQ(be.log[i].payload.state.index, 0);
        ASSERT_EQ(be.log[i + 1].hdr.request, VU_GET_VRING_BASE);
        ASSERT_EQ(be.log[i + 1].payload.state.index, 1);
        ASSERT(daemon_log_wait(&d, "port0: back-end disconnected (disconnected by vhostctl)", 2000));
        backend_peer_close(&be);

        /* the next back-end gets a full replay, resumed where the last one said it stopped */
        ASSERT_EQ(backend_peer_open(&b2, be_path, NET_TEST_FEATURES, NET_TEST_PROTOCOL_FEATURES), 0);
        ASSERT_EQ(backend_peer_serve_until(&b2, VU_SET_STATUS, 0xf, PEER_TIMEOUT_MS), 0);
        ASSERT(backend_peer_find(&b2, 0, VU_SET_MEM_TABLE) != SIZE_MAX);
        size_t b0 = backend_peer_find(&b2, 0, VU_SET_VRING_BASE);
        size_t b1 = backend_peer_find(&b2, b0 + 1, VU_SET_VRING_BASE);
        ASSERT_EQ(b2.log[b0].payload.state.num, 1000);          /* BackendPeer answered 1000 + index */
        ASSERT_EQ(b2.log[b1].payload.state.num, 1001);
        ASSERT_EQ(backend_peer_find(&b2, 0, VU_SET_VRING_KICK) != SIZE_MAX, 1);

        /* the front-end side: closed at once */
        ASSERT_EQ(vhostctl(&d, NULL, "disconnect port0 frontend"), 0);
        char c;
        ASSERT_EQ(read(fe.fd, &c, 1), 0);
        ASSERT_EQ(backend_peer_wait_closed(&b2, PEER_TIMEOUT_MS), 0);
        backend_peer_close(&b2);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Reading is open to the socket's users; changing needs uid 0 or admin_group. */
static void test_access_by_uid(void) {
        Daemon d;
        char ctl[128];

        if (geteuid() != 0) {
                test_skip("test_access_by_uid needs root to act as another uid");
                return;
        }
        daemon_start(&d, 1, "control_mode = \"0666\";");
        control_path(&d, ctl, sizeof(ctl));
        ASSERT_EQ(chmod(d.dir, 0755), 0);       /* mkdtemp made it 0700 */
        /* The build tree may sit where uid 65534 cannot reach: run a copy from d.dir. */
        char copy[256], cmd[600];
        snprintf(copy, sizeof(copy), "%s/vhostctl", d.dir);
        snprintf(cmd, sizeof(cmd), "cp '%s' '%s' && chmod 0755 '%s'", vhostctl_path(), copy, copy);
        ASSERT_EQ(system(cmd), 0);
        pid_t child = fork();
        ASSERT(child >= 0);
        if (child == 0) {
                ControlClient c;
                json_object *r;
                char *error = NULL;
                if (setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(10);
                if (control_client_open(&c, ctl) < 0)
                        _exit(11);
                control_client_call(&c, "io.vhostrecon.ListPorts", NULL, false);
                if (control_client_reply(&c, 5000, &r, &error, NULL) < 0 || error)
                        _exit(12);
                json_object *params = json_object_new_object();
                json_object_object_add(params, "name", json_object_new_string("port0"));
                json_object_object_add(params, "side", json_object_new_string("backend"));
                control_client_call(&c, "io.vhostrecon.Disconnect", params, false);
                if (control_client_reply(&c, 5000, &r, &error, NULL) < 0 || !error ||
                    strcmp(error, "io.vhostrecon.PermissionDenied") != 0)
                        _exit(13);
                control_client_call(&c, "io.vhostrecon.Reload", NULL, false);
                if (control_client_reply(&c, 5000, &r, &error, NULL) < 0 || !error ||
                    strcmp(error, "io.vhostrecon.PermissionDenied") != 0)
                        _exit(14);
                /* and vhostctl says so with its own exit code */
                setenv("VHOSTCTL", copy, 1);
                int code = vhostctl(&d, NULL, "reload");
                _exit(code == 5 ? 0 : 15);
        }
        int status;
        ASSERT(waitpid(child, &status, 0) == child);
        ASSERT(WIFEXITED(status));
        ASSERT_EQ(WEXITSTATUS(status), 0);
        ASSERT_EQ(vhostctl(&d, NULL, "reload"), 0);     /* root may */
        ASSERT_EQ(daemon_stop(&d), 0);
}

/* Garbage, oversized and stalled requests are refused, and another client is served
 * meanwhile. */
static void test_bad_clients(void) {
        Daemon d;
        char ctl[128];
        ControlClient garbage, big, stall, good;
        json_object *r;
        char *error;

        daemon_start(&d, 1, NULL);
        control_path(&d, ctl, sizeof(ctl));
        ASSERT_EQ(control_client_open(&garbage, ctl), 0);
        ASSERT_EQ(control_client_open(&big, ctl), 0);
        ASSERT_EQ(control_client_open(&stall, ctl), 0);
        ASSERT_EQ(control_client_open(&good, ctl), 0);

        ASSERT_EQ(send(garbage.fd, "hello there\0", 12, 0), 12);
        ASSERT_EQ(control_client_reply(&garbage, 5000, &r, &error, NULL), 0);
        ASSERT_STREQ(error, "org.varlink.service.InvalidParameter");
        free(error);
        json_object_put(r);
        ASSERT(control_client_closed(&garbage, 2000));

        static char blob[200000];
        memset(blob, 'x', sizeof(blob));
        (void) send(big.fd, blob, sizeof(blob), MSG_NOSIGNAL | MSG_DONTWAIT);
        ASSERT(control_client_closed(&big, 2000));
        ASSERT(daemon_log_wait(&d, "request too large", 2000));

        ASSERT_EQ(send(stall.fd, "{\"method\": \"io.vhost", 20, 0), 20);
        /* meanwhile another client is served */
        ASSERT_EQ(control_client_call(&good, "io.vhostrecon.ListPorts", NULL, false), 0);
        ASSERT_EQ(control_client_reply(&good, 5000, &r, &error, NULL), 0);
        ASSERT(!error);
        json_object_put(r);
        ASSERT(control_client_closed(&stall, 8000));
        ASSERT(daemon_log_wait(&d, "stalled in the middle of a request", 2000));

        /* more clients than allowed: the extra ones are closed, the good one still works */
        int extra[CONTROL_TEST_MAX_CLIENTS + 4];
        for (size_t i = 0; i < ELEMENTSOF(extra); i++)
                extra[i] = peer_connect(ctl, 1000);
        ASSERT(daemon_log_wait(&d, "refusing another", 2000));
        ASSERT_EQ(control_client_call(&good, "org.varlink.service.GetInfo", NULL, false), 0);
        ASSERT_EQ(control_client_reply(&good, 5000, &r, &error, NULL), 0);
        ASSERT(!error);
        json_object_put(r);
        for (size_t i = 0; i < ELEMENTSOF(extra); i++)
                close(extra[i]);

        control_client_close(&garbage);
        control_client_close(&big);
        control_client_close(&stall);
        control_client_close(&good);
        ASSERT_EQ(daemon_stop(&d), 0);
}

static void test_reload(void) {
        Daemon d;
        char fe_path[128], be_path[128], *out;
        FrontendPeer fe;
        BackendPeer be;

        daemon_start(&d, 1, NULL);
        daemon_path(&d, 0, false, fe_path, sizeof(fe_path));
        daemon_path(&d, 0, true, be_path, sizeof(be_path));
        ASSERT_EQ(peers_setup_device(fe_path, be_path, &fe, &be, 2), 0);

        /* add port1; port0 must not be touched */
        FILE *f = fopen(d.conf, "ae");
        ASSERT(f);
        fclose(f);
        char cmd[512];
        snprintf(cmd, sizeof(cmd),
                 "sed -i 's|^);$|, { name = \"port1\"; frontend = { path = \"%s/port1.sock\"; }; "
                 "backend = { path = \"%s/port1.vswitch.sock\"; }; }\\n);|' '%s'", d.dir, d.dir, d.conf);
        ASSERT_EQ(system(cmd), 0);
        ASSERT_EQ(vhostctl(&d, &out, "reload"), 0);
        free(out);
        ASSERT(daemon_log_wait(&d, "port1: added", 2000));
        ASSERT_EQ(vhostctl(&d, &out, "list"), 0);
        ASSERT_CONTAINS(out, "port1");
        ASSERT_CONTAINS(out, "port0            up");
        free(out);
        json_object *p = get_port(&d, "port0");
        ASSERT_EQ(jint(p, "counters", "frontend_connects"), 1);
        ASSERT_EQ(jint(p, "counters", "backend_connects"), 1);
        json_object_put(p);

        /* a bad file: the reload fails with the reason, the running config stays */
        snprintf(cmd, sizeof(cmd), "echo 'ports = ( { name = ; } );' > '%s'", d.conf);
        ASSERT_EQ(system(cmd), 0);
        ASSERT_EQ(vhostctl(&d, &out, "reload 2>&1"), 7);
        ASSERT_CONTAINS(out, "ReloadFailed");
        ASSERT_CONTAINS(out, "vhost-recon.conf:1:");
        free(out);
        ASSERT_EQ(vhostctl(&d, &out, "list"), 0);
        ASSERT_CONTAINS(out, "port1");
        ASSERT_CONTAINS(out, "port0            up");
        free(out);

        backend_peer_close(&be);
        frontend_peer_close(&fe);
        ASSERT_EQ(daemon_stop(&d), 0);
}

int main(void) {
        signal(SIGPIPE, SIG_IGN);
        static const TestCase cases[] = {
                TEST_CASE(test_link_state_and_events),
                TEST_CASE(test_get_info_and_errors),
                TEST_CASE(test_disconnect),
                TEST_CASE(test_access_by_uid),
                TEST_CASE(test_bad_clients),
                TEST_CASE(test_reload),
        };
        return run_tests(cases, ELEMENTSOF(cases));
}
