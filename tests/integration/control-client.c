/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "control-client.h"
#include "peer.h"
#include "tests.h"

int control_client_open(ControlClient *c, const char *path) {
        c->fd = peer_connect(path, 2000);
        varlink_buffer_init(&c->in, 16u << 20);
        return c->fd < 0 ? c->fd : 0;
}

void control_client_close(ControlClient *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        varlink_buffer_done(&c->in);
}

int control_client_call(ControlClient *c, const char *method, json_object *params, bool more) {
        size_t size;
        char *m = varlink_call_new(method, params, more, &size);
        ssize_t n = send(c->fd, m, size, MSG_NOSIGNAL);
        free(m);
        return n == (ssize_t) size ? 0 : -EIO;
}

int control_client_reply(ControlClient *c, int timeout_ms, json_object **ret_params, char **ret_error, bool *ret_continues) {
        for (;;) {
                char *msg = NULL;
                int r = varlink_buffer_next(&c->in, &msg);
                if (r < 0)
                        return r;
                if (r > 0) {
                        bool cont;
                        r = varlink_reply_parse(msg, ret_params, ret_error, ret_continues ? ret_continues : &cont);
                        free(msg);
                        return r;
                }
                struct pollfd p = { .fd = c->fd, .events = POLLIN };
                if (poll(&p, 1, timeout_ms) <= 0)
                        return -ETIMEDOUT;
                char buf[65536];
                ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
                if (n <= 0)
                        return -ECONNRESET;
                if (varlink_buffer_append(&c->in, buf, n) < 0)
                        return -E2BIG;
        }
}

json_object *control_call_ok(const char *path, const char *method, json_object *params) {
        ControlClient c;
        json_object *r;
        char *error;

        ASSERT_EQ(control_client_open(&c, path), 0);
        ASSERT_EQ(control_client_call(&c, method, params, false), 0);
        ASSERT_EQ(control_client_reply(&c, 5000, &r, &error, NULL), 0);
        if (error)
                fprintf(stderr, "%s failed: %s\n", method, error);
        ASSERT(!error);
        control_client_close(&c);
        return r;
}

int64_t control_port_counter(const char *path, const char *port, const char *counter) {
        json_object *params = json_object_new_object();
        json_object_object_add(params, "name", json_object_new_string(port));
        json_object *r = control_call_ok(path, "io.vhostrecon.GetPort", params);
        json_object *c = json_object_object_get(json_object_object_get(r, "port"), "counters");
        json_object *v = json_object_object_get(c, counter);
        ASSERT(v);
        int64_t n = json_object_get_int64(v);
        json_object_put(r);
        return n;
}

bool control_client_closed(ControlClient *c, int timeout_ms) {
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        char buf[4096];
        for (;;) {
                if (poll(&p, 1, timeout_ms) <= 0)
                        return false;
                ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
                if (n <= 0)
                        return true;
        }
}
