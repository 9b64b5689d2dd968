/* SPDX-License-Identifier: MIT */
/* The config parser on arbitrary text: an error with file and line, or a config. */
#include <stdlib.h>
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char *text = malloc(size + 1), err[1024];
        Config *c = NULL;

        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = 0;
        if (config_parse_string(text, "fuzz.conf", &c, err, sizeof(err)) == 0) {
                for (size_t i = 0; i < c->n_ports; i++) {
                        PortConfig copy;
                        if (port_config_copy(&copy, &c->ports[i]) == 0) {
                                if (!port_config_equal(&copy, &c->ports[i]))
                                        abort();
                                port_config_done(&copy);
                        }
                }
                config_free(c);
        } else if (strncmp(err, "fuzz.conf:", 10) != 0)
                abort();        /* every error names the file (and the line) */
        free(text);
        return 0;
}
