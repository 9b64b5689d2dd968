/* SPDX-License-Identifier: MIT */
/* The control protocol's parser on arbitrary bytes: framing in pieces, calls and replies. */
#include <stdlib.h>

#include "varlink.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        VarlinkBuffer b;
        char *msg;

        varlink_buffer_init(&b, 4096);
        for (size_t off = 0; off < size; off += 13) {
                size_t n = size - off < 13 ? size - off : 13;
                if (varlink_buffer_append(&b, data + off, n) < 0)
                        break;
                int r;
                while ((r = varlink_buffer_next(&b, &msg)) > 0) {
                        VarlinkCall c;
                        const char *reason;
                        if (varlink_call_parse(msg, &c, &reason) == 0)
                                varlink_call_done(&c);
                        json_object *params;
                        char *error;
                        bool cont;
                        if (varlink_reply_parse(msg, &params, &error, &cont) == 0) {
                                free(error);
                                json_object_put(params);
                        }
                        free(msg);
                }
                if (r < 0)
                        break;
        }
        varlink_buffer_done(&b);
        return 0;
}
