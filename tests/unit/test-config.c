/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "config.h"
#include "tests.h"

static Config *parse_ok(const char *text) {
        Config *c = NULL;
        char err[512] = "";
        int r = config_parse_string(text, "test.conf", &c, err, sizeof(err));
        if (r < 0)
                fprintf(stderr, "unexpected error: %s\n", err);
        ASSERT_EQ(r, 0);
        return c;
}

static void parse_bad(const char *text, const char *expect) {
        Config *c = NULL;
        char err[512] = "";
        ASSERT_EQ(config_parse_string(text, "test.conf", &c, err, sizeof(err)), -EINVAL);
        ASSERT(c == NULL);
        fprintf(stderr, "   %s\n", err);
        ASSERT_CONTAINS(err, expect);
}

static void test_example_file(void) {
        Config *c = NULL;
        char err[512] = "";

        ASSERT_EQ(config_load(EXAMPLE_CONFIG, &c, err, sizeof(err)), 0);
        ASSERT_STREQ(c->control, "/run/vhost-recon/control");
        ASSERT_EQ(c->reply_timeout_ms, 5000);
        ASSERT_EQ(c->n_ports, 2);
        ASSERT_STREQ(c->ports[0].name, "port0");
        ASSERT_STREQ(c->ports[0].frontend.path, "/run/vhost-recon/port0.sock");
        ASSERT_EQ(c->ports[0].backend.mode, SIDE_SERVER);
        ASSERT_EQ(c->ports[0].socket_mode, 0660);
        ASSERT_EQ(c->ports[1].socket_mode, 0);
        ASSERT(config_find_port(c, "port1"));
        ASSERT(!config_find_port(c, "port2"));
        config_free(c);

        ASSERT_EQ(config_load("/nonexistent/vhost-recon.conf", &c, err, sizeof(err)), -ENOENT);
        ASSERT_CONTAINS(err, "/nonexistent/vhost-recon.conf: cannot open");
}

static void test_full_port(void) {
        Config *c = parse_ok(
                "reply_timeout_ms = 250;\n"
                "ports = ( { name = \"vblk0\";\n"
                "  frontend = { path = \"/run/a.sock\"; };\n"
                "  backend = { path = \"/var/run/qsd/vblk0.sock\"; mode = \"client\"; reconnect_ms = 50; };\n"
                "  socket_mode = \"0600\"; socket_group = \"kvm\";\n"
                "  allow_uids = [ 0, 107 ]; allow_gids = [ 36 ];\n"
                "  features = 0x140000000L; protocol_features = 0x10009;\n"
                "} );\n");
        const PortConfig *p = &c->ports[0];
        ASSERT_STREQ(c->control, CONFIG_DEFAULT_CONTROL);
        ASSERT_EQ(c->control_mode, 0660);
        ASSERT(!c->admin_group);
        ASSERT(!c->bpf_link_map);
        ASSERT_EQ(c->reply_timeout_ms, 250);
        ASSERT_EQ(p->backend.mode, SIDE_CLIENT);
        ASSERT_EQ(p->backend.reconnect_ms, 50);
        ASSERT_EQ(p->frontend.reconnect_ms, CONFIG_DEFAULT_RECONNECT_MS);
        ASSERT_EQ(p->n_allow_uids, 2);
        ASSERT_EQ(p->allow_uids[1], 107);
        ASSERT_EQ(p->n_allow_gids, 1);
        ASSERT_STREQ(p->socket_group, "kvm");
        ASSERT(p->features_set);
        ASSERT_EQ(p->features, 0x140000000ULL);
        ASSERT_EQ(p->protocol_features, 0x10009);

        PortConfig copy;
        ASSERT_EQ(port_config_copy(&copy, p), 0);
        ASSERT(port_config_equal(&copy, p));
        copy.backend.reconnect_ms++;
        ASSERT(!port_config_equal(&copy, p));
        port_config_done(&copy);
        config_free(c);

        c = parse_ok("ports = ();");
        ASSERT_EQ(c->n_ports, 0);
        config_free(c);

        c = parse_ok("control_mode = \"0600\"; control_group = \"adm\"; admin_group = \"wheel\";\n"
                     "bpf_link_map = \"/sys/fs/bpf/vhost-recon/links\";");
        ASSERT_EQ(c->control_mode, 0600);
        ASSERT_STREQ(c->control_group, "adm");
        ASSERT_STREQ(c->admin_group, "wheel");
        ASSERT_STREQ(c->bpf_link_map, "/sys/fs/bpf/vhost-recon/links");
        config_free(c);
}

static void test_errors_name_file_and_line(void) {
        parse_bad("ports = (\n  { name = \"a\" \n", "test.conf:3:");
        parse_bad("contro = \"/x\";", "test.conf:1: unknown setting 'contro'");
        parse_bad("reply_timeout_ms = 0;", "between 1 and 600000");
        parse_bad("reply_timeout_ms = \"5\";", "must be an integer");
        parse_bad("control = \"relative\";", "not absolute");
        parse_bad("control_mode = \"rw\";", "control_mode must be an octal mode");
        parse_bad("bpf_link_map = \"links\";", "not an absolute path");
        parse_bad("ports = (\n { name = \"a\";\n   frontend = { path = \"/a\"; };\n } );",
                  "test.conf:2: 'backend' is missing");
        parse_bad("ports = ( { name = \"a\";\n frontend = { path = \"/a\"; mode = \"listen\"; };\n"
                  " backend = { path = \"/b\"; }; } );", "test.conf:2: mode must be \"server\" or \"client\"");
        parse_bad("ports = ( { name = \"a b\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; }; } );",
                  "not valid");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/a\"; }; } );",
                  "same path");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; }; },\n"
                  "{ name = \"a\"; frontend = { path = \"/c\"; }; backend = { path = \"/d\"; }; } );",
                  "test.conf:2: port 'a' is defined twice (first at line 1)");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; }; },\n"
                  "{ name = \"b\"; frontend = { path = \"/b\"; }; backend = { path = \"/d\"; }; } );",
                  "path '/b' is used by ports 'a' and 'b'");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; };\n"
                  " socket_mode = \"0999\"; } );", "test.conf:2: socket_mode must be an octal mode");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; };\n"
                  " allow_uids = [ \"root\" ]; } );", "must be non-negative numbers");
        parse_bad("ports = ( { name = \"a\"; frontend = \"/a\"; backend = { path = \"/b\"; }; } );",
                  "must be a group");
        /* libconfig would keep 0x40000000 of this, silently */
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; }; backend = { path = \"/b\"; };\n"
                  " features = 0x140000000; } );", "test.conf:2: 'features' is a 64-bit value: write it with an L suffix");
        parse_bad("ports = ( { name = \"a\"; frontend = { path = \"/a\"; colour = 1; }; backend = { path = \"/b\"; }; } );",
                  "unknown setting 'colour'");
        char long_path[200];
        memset(long_path, 'x', sizeof(long_path));
        long_path[0] = '/';
        long_path[199] = 0;
        char text[512];
        snprintf(text, sizeof(text), "ports = ( { name = \"a\"; frontend = { path = \"%s\"; }; backend = { path = \"/b\"; }; } );", long_path);
        parse_bad(text, "too long for a unix socket");
}

static void test_default_port(void) {
        PortConfig p;
        ASSERT_EQ(port_config_default("port7", &p), 0);
        ASSERT_STREQ(p.frontend.path, "/run/vhost-recon/port7.sock");
        ASSERT_STREQ(p.backend.path, "/run/vhost-recon/port7.vswitch.sock");
        ASSERT_EQ(p.frontend.mode, SIDE_SERVER);
        port_config_done(&p);
        ASSERT_EQ(port_config_default("../etc", &p), -EINVAL);
        ASSERT_EQ(port_config_default("", &p), -EINVAL);
        ASSERT(port_name_is_valid("vm-1.net0@host:2"));
        ASSERT(!port_name_is_valid("a/b"));
}

static void test_metrics_setting(void) {
        struct sockaddr_storage ss;
        unsigned len = 0;

        Config *c = parse_ok("ports = ();");
        ASSERT(c->metrics == NULL);     /* off by default */
        config_free(c);
        c = parse_ok("metrics = \"127.0.0.1:9477\"; ports = ();");
        ASSERT_STREQ(c->metrics, "127.0.0.1:9477");
        config_free(c);
        parse_bad("metrics = \"localhost\";\nports = ();", "test.conf:1: metrics 'localhost' is not");
        parse_bad("metrics = 9477;", "'metrics' must be a string");

        ASSERT_EQ(config_parse_listen_address("socket", &ss, &len), 1);
        ASSERT_EQ(config_parse_listen_address("127.0.0.1:9477", &ss, &len), 0);
        ASSERT_EQ(ss.ss_family, AF_INET);
        ASSERT_EQ(ntohs(((struct sockaddr_in *) &ss)->sin_port), 9477);
        ASSERT_EQ(len, sizeof(struct sockaddr_in));
        ASSERT_EQ(config_parse_listen_address("[::1]:80", &ss, &len), 0);
        ASSERT_EQ(ss.ss_family, AF_INET6);
        ASSERT_EQ(len, sizeof(struct sockaddr_in6));
        ASSERT_EQ(config_parse_listen_address("*:9", &ss, &len), 0);
        ASSERT_EQ(((struct sockaddr_in *) &ss)->sin_addr.s_addr, htonl(INADDR_ANY));
        const char *bad[] = { "", ":", ":80", "1.2.3.4:", "1.2.3.4:0", "1.2.3.4:65536", "1.2.3.4:+80", "1.2.3.4:8x",
                              "[::1:80", "::1:80", "[]:80", "300.1.1.1:80", "[1.2.3.4]:80" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                ASSERT_EQ(config_parse_listen_address(bad[i], &ss, &len), -EINVAL);
}

RUN_TESTS(
        TEST_CASE(test_example_file),
        TEST_CASE(test_full_port),
        TEST_CASE(test_errors_name_file_and_line),
        TEST_CASE(test_default_port),
        TEST_CASE(test_metrics_setting),
)
