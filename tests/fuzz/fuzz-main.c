/* SPDX-License-Identifier: MIT */
/* A plain main() for the fuzz targets: runs LLVMFuzzerTestOneInput() once on each file
 * named, or on each file in each directory named, so the seeds and every input that once
 * crashed a target run in every build, without libFuzzer. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int run_file(const char *path) {
        FILE *f = fopen(path, "re");
        uint8_t *data = NULL;
        size_t size = 0, allocated = 0;

        if (!f) {
                fprintf(stderr, "%s: %s\n", path, strerror(errno));
                return -errno;
        }
        for (;;) {
                if (size == allocated) {
                        allocated = allocated ? allocated * 2 : 4096;
                        uint8_t *p = realloc(data, allocated);
                        if (!p) {
                                free(data);
                                fclose(f);
                                return -ENOMEM;
                        }
                        data = p;
                }
                size_t n = fread(data + size, 1, allocated - size, f);
                size += n;
                if (n == 0)
                        break;
        }
        int r = ferror(f) ? -EIO : 0;
        fclose(f);
        if (r < 0)
                fprintf(stderr, "%s: read error\n", path);
        else
                (void) LLVMFuzzerTestOneInput(data, size);
        free(data);
        return r;
}

int main(int argc, char *argv[]) {
        unsigned n_inputs = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                if (stat(argv[i], &st) < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                        return EXIT_FAILURE;
                }
                if (!S_ISDIR(st.st_mode)) {
                        if (run_file(argv[i]) < 0)
                                return EXIT_FAILURE;
                        n_inputs++;
                        continue;
                }
                struct dirent **entries;
                int n = scandir(argv[i], &entries, NULL, alphasort);
                if (n < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
                        return EXIT_FAILURE;
                }
                int r = 0;
                for (int k = 0; k < n; k++) {
                        char path[4096];
                        if (r == 0 && entries[k]->d_name[0] != '.' &&
                            snprintf(path, sizeof(path), "%s/%s", argv[i], entries[k]->d_name) < (int) sizeof(path)) {
                                printf("%s\n", path);
                                fflush(stdout);
                                r = run_file(path);
                                n_inputs++;
                        }
                        free(entries[k]);
                }
                free(entries);
                if (r < 0)
                        return EXIT_FAILURE;
        }
        printf("%u inputs ran without a finding\n", n_inputs);
        return n_inputs > 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
