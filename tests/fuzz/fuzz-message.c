/* SPDX-License-Identifier: MIT */
/* The codec and the incremental reader on arbitrary bytes: validation never crashes, the
 * reader takes the bytes in pieces and never leaks. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io.h"
#include "vhost-user.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *reason;
        int sp[2];
        VuMsg m;

        /* validation of each message as a request, a reply and a back-end request */
        for (size_t off = 0; off + VU_HDR_SIZE <= size;) {
                memcpy(&m.hdr, data + off, VU_HDR_SIZE);
                off += VU_HDR_SIZE;
                size_t n = m.hdr.size < VU_MAX_PAYLOAD ? m.hdr.size : VU_MAX_PAYLOAD;
                if (n > size - off)
                        n = size - off;
                memset(m.payload.raw, 0, sizeof(m.payload.raw));
                memcpy(m.payload.raw, data + off, n);
                off += n;
                m.n_fds = 0;
                (void) vu_msg_check_request(&m, &reason);
                (void) vu_msg_check_reply(&m, m.hdr.request, false, &reason);
                (void) vu_msg_check_reply(&m, m.hdr.request, true, &reason);
                (void) vu_msg_check_backend_request(&m, &reason);
                uint32_t index;
                (void) vu_msg_vring_index(&m, &index);
        }

        /* the reader, through a socket, 7 bytes at a time */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0)
                return 0;
        VuReader rd;
        vu_reader_init(&rd);
        for (size_t off = 0; off < size; off += 7) {
                size_t n = size - off < 7 ? size - off : 7;
                if (write(sp[0], data + off, n) != (ssize_t) n)
                        break;
                while (vu_reader_read(&rd, sp[1], &m, &reason) == 1)
                        vu_msg_close_fds(&m);
        }
        close(sp[0]);
        while (vu_reader_read(&rd, sp[1], &m, &reason) == 1)
                vu_msg_close_fds(&m);
        vu_reader_reset(&rd);
        close(sp[1]);
        return 0;
}
