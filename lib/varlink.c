/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "macro.h"
#include "varlink.h"

void varlink_buffer_init(VarlinkBuffer *b, size_t max) {
        *b = (VarlinkBuffer) { .max = max };
}

void varlink_buffer_done(VarlinkBuffer *b) {
        free(b->data);
        *b = (VarlinkBuffer) { .max = b->max };
}

int varlink_buffer_append(VarlinkBuffer *b, const void *data, size_t size) {
        /* Memory stays bounded; varlink_buffer_next() refuses a message over the limit. */
        if (b->size + size > 2 * b->max + 1)
                return -E2BIG;
        if (b->size + size > b->allocated) {
                size_t n = MAX(b->allocated * 2, b->size + size);
                char *d = realloc(b->data, n);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->allocated = n;
        }
        memcpy(b->data + b->size, data, size);
        b->size += size;
        return 0;
}

int varlink_buffer_next(VarlinkBuffer *b, char **ret) {
        char *nul = b->size ? memchr(b->data, 0, b->size) : NULL;
        if (!nul) {
                if (b->size > b->max)
                        return -E2BIG;
                return 0;
        }
        size_t len = nul - b->data;
        if (len > b->max)
                return -E2BIG;
        char *m = malloc(len + 1);
        if (!m)
                return -ENOMEM;
        memcpy(m, b->data, len + 1);
        memmove(b->data, nul + 1, b->size - len - 1);
        b->size -= len + 1;
        *ret = m;
        return 1;
}

static int fail(const char **ret_reason, const char *reason) {
        if (ret_reason)
                *ret_reason = reason;
        return -EBADMSG;
}

int varlink_call_parse(const char *text, VarlinkCall *ret, const char **ret_reason) {
        json_tokener *tok = json_tokener_new_ex(32);
        json_object *o, *v;
        VarlinkCall c = {};

        if (!tok)
                return -ENOMEM;
        o = json_tokener_parse_ex(tok, text, (int) strlen(text));
        bool complete = json_tokener_get_error(tok) == json_tokener_success &&
                        json_tokener_get_parse_end(tok) == strlen(text);
        json_tokener_free(tok);
        if (!o || !complete) {
                json_object_put(o);
                return fail(ret_reason, "not a JSON object");
        }
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return fail(ret_reason, "not a JSON object");
        }
        if (!json_object_object_get_ex(o, "method", &v) || !json_object_is_type(v, json_type_string)) {
                json_object_put(o);
                return fail(ret_reason, "no \"method\" string");
        }
        c.method = strdup(json_object_get_string(v));
        if (json_object_object_get_ex(o, "parameters", &v) && !json_object_is_type(v, json_type_null)) {
                if (!json_object_is_type(v, json_type_object)) {
                        free(c.method);
                        json_object_put(o);
                        return fail(ret_reason, "\"parameters\" is not an object");
                }
                c.parameters = json_object_get(v);
        } else
                c.parameters = json_object_new_object();
        for (int i = 0; i < 2; i++) {
                const char *key = i ? "oneway" : "more";
                if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
                        continue;
                if (!json_object_is_type(v, json_type_boolean)) {
                        varlink_call_done(&c);
                        json_object_put(o);
                        return fail(ret_reason, i ? "\"oneway\" is not a boolean" : "\"more\" is not a boolean");
                }
                *(i ? &c.oneway : &c.more) = json_object_get_boolean(v);
        }
        json_object_put(o);
        if (!c.method || !c.parameters) {
                varlink_call_done(&c);
                return -ENOMEM;
        }
        *ret = c;
        return 0;
}

void varlink_call_done(VarlinkCall *c) {
        free(c->method);
        json_object_put(c->parameters);
        *c = (VarlinkCall) {};
}

static char *serialize(json_object *o, size_t *ret_size) {
        size_t len;
        const char *s = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len);
        char *m = s ? malloc(len + 1) : NULL;
        if (m) {
                memcpy(m, s, len + 1);          /* with its NUL: the Varlink terminator */
                *ret_size = len + 1;
        }
        json_object_put(o);
        return m;
}

static bool json_buf_reserve(JsonBuf *b, size_t n) {
        if (b->oom)
                return false;
        if (b->len + n <= b->allocated)
                return true;
        size_t want = MAX(b->allocated * 2, b->len + n);
        want = MAX(want, (size_t) 4096);
        char *d = realloc(b->data, want);
        if (!d) {
                b->oom = true;
                return false;
        }
        b->data = d;
        b->allocated = want;
        return true;
}

void json_buf_put(JsonBuf *b, const char *s, size_t n) {
        if (!json_buf_reserve(b, n))
                return;
        memcpy(b->data + b->len, s, n);
        b->len += n;
}

void json_buf_puts(JsonBuf *b, const char *s) {
        json_buf_put(b, s, strlen(s));
}

void json_buf_put_u64(JsonBuf *b, uint64_t v) {
        char tmp[20];
        size_t i = sizeof(tmp);
        do
                tmp[--i] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        json_buf_put(b, tmp + i, sizeof(tmp) - i);
}

void json_buf_put_i64(JsonBuf *b, int64_t v) {
        if (v < 0) {
                json_buf_put(b, "-", 1);
                json_buf_put_u64(b, -(uint64_t) v);
        } else
                json_buf_put_u64(b, (uint64_t) v);
}

void json_buf_put_string(JsonBuf *b, const char *s) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *p = (const unsigned char *) s, *run = p;

        json_buf_put(b, "\"", 1);
        for (;; p++) {
                if (*p && *p != '"' && *p != '\\' && *p >= 0x20)
                        continue;
                json_buf_put(b, (const char *) run, p - run);   /* the plain run before it */
                if (!*p)
                        break;
                if (*p == '"' || *p == '\\') {
                        char e[2] = { '\\', (char) *p };
                        json_buf_put(b, e, 2);
                } else {
                        char e[6] = { '\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15] };
                        json_buf_put(b, e, 6);
                }
                run = p + 1;
        }
        json_buf_put(b, "\"", 1);
}

char *json_buf_steal(JsonBuf *b, size_t *ret_size) {
        json_buf_put(b, "", 1);
        if (b->oom) {
                json_buf_done(b);
                return NULL;
        }
        char *d = b->data;
        *ret_size = b->len;
        *b = (JsonBuf) {};
        return d;
}

void json_buf_done(JsonBuf *b) {
        free(b->data);
        *b = (JsonBuf) {};
}

char *varlink_reply_new(json_object *parameters, bool continues, size_t *ret_size) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        if (continues)
                json_object_object_add(o, "continues", json_object_new_boolean(true));
        return serialize(o, ret_size);
}

char *varlink_error_new(const char *error, json_object *parameters, size_t *ret_size) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "error", json_object_new_string(error));
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        return serialize(o, ret_size);
}

char *varlink_call_new(const char *method, json_object *parameters, bool more, size_t *ret_size) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "method", json_object_new_string(method));
        json_object_object_add(o, "parameters", parameters ? parameters : json_object_new_object());
        if (more)
                json_object_object_add(o, "more", json_object_new_boolean(true));
        return serialize(o, ret_size);
}

int varlink_reply_parse(const char *text, json_object **ret_parameters, char **ret_error, bool *ret_continues) {
        json_object *o = json_tokener_parse(text), *v;

        if (!o || !json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                return -EBADMSG;
        }
        *ret_error = NULL;
        if (json_object_object_get_ex(o, "error", &v) && json_object_is_type(v, json_type_string))
                *ret_error = strdup(json_object_get_string(v));
        *ret_continues = json_object_object_get_ex(o, "continues", &v) && json_object_get_boolean(v);
        if (json_object_object_get_ex(o, "parameters", &v) && json_object_is_type(v, json_type_object))
                *ret_parameters = json_object_get(v);
        else
                *ret_parameters = json_object_new_object();
        json_object_put(o);
        return 0;
}
