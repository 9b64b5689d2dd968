/* SPDX-License-Identifier: MIT */
#include <errno.h>

#include "tests.h"
#include "varlink.h"

static void test_framing(void) {
        VarlinkBuffer b;
        char *m;

        varlink_buffer_init(&b, 64);
        ASSERT_EQ(varlink_buffer_next(&b, &m), 0);
        /* two messages and the start of a third, in pieces */
        ASSERT_EQ(varlink_buffer_append(&b, "{\"a\":1}\0{\"b\"", 12), 0);
        ASSERT_EQ(varlink_buffer_next(&b, &m), 1);
        ASSERT_STREQ(m, "{\"a\":1}");
        free(m);
        ASSERT_EQ(varlink_buffer_next(&b, &m), 0);
        ASSERT_EQ(varlink_buffer_append(&b, ":2}\0", 4), 0);
        ASSERT_EQ(varlink_buffer_next(&b, &m), 1);
        ASSERT_STREQ(m, "{\"b\":2}");
        free(m);
        ASSERT_EQ(b.size, 0);

        /* a message over the limit is refused, with or without its end */
        char big[100];
        memset(big, 'x', sizeof(big));
        ASSERT_EQ(varlink_buffer_append(&b, big, sizeof(big)), 0);
        ASSERT_EQ(varlink_buffer_next(&b, &m), -E2BIG);
        varlink_buffer_done(&b);
        varlink_buffer_init(&b, 64);
        ASSERT_EQ(varlink_buffer_append(&b, big, 90), 0);
        ASSERT_EQ(varlink_buffer_append(&b, "\0", 1), 0);
        ASSERT_EQ(varlink_buffer_next(&b, &m), -E2BIG);
        /* memory stays bounded however much is sent */
        ASSERT_EQ(varlink_buffer_append(&b, big, sizeof(big)), -E2BIG);
        varlink_buffer_done(&b);
}

static void test_call_parse(void) {
        VarlinkCall c;
        const char *reason;

        ASSERT_EQ(varlink_call_parse("{\"method\":\"io.vhostrecon.GetPort\",\"parameters\":{\"name\":\"p\"},\"more\":true}",
                                     &c, &reason), 0);
        ASSERT_STREQ(c.method, "io.vhostrecon.GetPort");
        ASSERT(c.more);
        ASSERT(!c.oneway);
        ASSERT_STREQ(json_object_get_string(json_object_object_get(c.parameters, "name")), "p");
        varlink_call_done(&c);

        ASSERT_EQ(varlink_call_parse("{\"method\":\"a.B\"}", &c, &reason), 0);
        ASSERT(json_object_is_type(c.parameters, json_type_object));
        varlink_call_done(&c);

        static const struct { const char *text, *reason; } bad[] = {
                { "", "not a JSON object" },
                { "hello", "not a JSON object" },
                { "[1,2]", "not a JSON object" },
                { "{\"method\":1}", "no \"method\" string" },
                { "{\"parameters\":{}}", "no \"method\" string" },
                { "{\"method\":\"a.B\",\"parameters\":[1]}", "\"parameters\" is not an object" },
                { "{\"method\":\"a.B\",\"more\":\"yes\"}", "\"more\" is not a boolean" },
                { "{\"method\":\"a.B\"} trailing", "not a JSON object" },
                { "{\"method\":\"a.B\"", "not a JSON object" },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                reason = NULL;
                ASSERT_EQ(varlink_call_parse(bad[i].text, &c, &reason), -EBADMSG);
                ASSERT_STREQ(reason, bad[i].reason);
        }
}

static void test_replies(void) {
        size_t size;
        json_object *p, *params;
        char *error;
        bool continues;

        p = json_object_new_object();
        json_object_object_add(p, "x", json_object_new_int(5));
        char *m = varlink_reply_new(p, true, &size);
        ASSERT_EQ(m[size - 1], 0);
        ASSERT_EQ(strlen(m), size - 1);
        ASSERT_EQ(varlink_reply_parse(m, &params, &error, &continues), 0);
        ASSERT(!error);
        ASSERT(continues);
        ASSERT_EQ(json_object_get_int(json_object_object_get(params, "x")), 5);
        json_object_put(params);
        free(m);

        m = varlink_error_new("io.vhostrecon.NoSuchPort", NULL, &size);
        ASSERT_EQ(varlink_reply_parse(m, &params, &error, &continues), 0);
        ASSERT_STREQ(error, "io.vhostrecon.NoSuchPort");
        ASSERT(!continues);
        free(error);
        json_object_put(params);
        free(m);

        m = varlink_call_new("io.vhostrecon.Monitor", NULL, true, &size);
        VarlinkCall c;
        const char *reason;
        ASSERT_EQ(varlink_call_parse(m, &c, &reason), 0);
        ASSERT(c.more);
        varlink_call_done(&c);
        free(m);
        ASSERT_EQ(varlink_reply_parse("nope", &params, &error, &continues), -EBADMSG);
}

/* What JsonBuf writes is what json-c reads back: every byte value in strings, numbers at
 * their limits, and the Varlink terminator counted in the size. */
static void test_json_buf(void) {
        JsonBuf b = {};
        char s[256];
        size_t size;

        /* every ASCII byte but NUL; the UTF-8 below is passed through as it is */
        for (int i = 1; i < 128; i++)
                s[i - 1] = (char) i;
        s[127] = 0;
        json_buf_puts(&b, "[");
        json_buf_put_string(&b, s);
        json_buf_puts(&b, ",");
        json_buf_put_string(&b, "port-\xc3\xa9\"q\"\\x");
        json_buf_puts(&b, ",");
        json_buf_put_string(&b, "");
        json_buf_puts(&b, ",");
        json_buf_put_u64(&b, UINT64_MAX);
        json_buf_puts(&b, ",");
        json_buf_put_u64(&b, 0);
        json_buf_puts(&b, ",");
        json_buf_put_i64(&b, INT64_MIN);
        json_buf_puts(&b, ",");
        json_buf_put_i64(&b, -1);
        json_buf_puts(&b, "]");
        char *text = json_buf_steal(&b, &size);
        ASSERT(text);
        ASSERT_EQ(size, strlen(text) + 1);
        ASSERT_EQ(b.len, 0);

        json_object *o = json_tokener_parse(text);
        ASSERT(o);
        ASSERT_STREQ(json_object_get_string(json_object_array_get_idx(o, 0)), s);
        ASSERT_STREQ(json_object_get_string(json_object_array_get_idx(o, 1)), "port-\xc3\xa9\"q\"\\x");
        ASSERT_STREQ(json_object_get_string(json_object_array_get_idx(o, 2)), "");
        ASSERT_EQ(json_object_get_uint64(json_object_array_get_idx(o, 3)), UINT64_MAX);
        ASSERT_EQ(json_object_get_uint64(json_object_array_get_idx(o, 4)), 0);
        ASSERT_EQ(json_object_get_int64(json_object_array_get_idx(o, 5)), INT64_MIN);
        ASSERT_EQ(json_object_get_int64(json_object_array_get_idx(o, 6)), -1);
        json_object_put(o);
        /* control characters are escaped, not written raw */
        for (const char *p = text; *p; p++)
                ASSERT((unsigned char) *p >= 0x20);
        free(text);

        /* growing past the first allocation keeps every byte */
        for (int i = 0; i < 10000; i++) {
                json_buf_put_u64(&b, (uint64_t) i);
                json_buf_puts(&b, " ");
        }
        text = json_buf_steal(&b, &size);
        ASSERT(text);
        ASSERT(strncmp(text, "0 1 2 3 ", 8) == 0);
        ASSERT(strstr(text, " 9999 "));
        free(text);
        json_buf_done(&b);
}

RUN_TESTS(
        TEST_CASE(test_framing),
        TEST_CASE(test_call_parse),
        TEST_CASE(test_replies),
        TEST_CASE(test_json_buf),
)
