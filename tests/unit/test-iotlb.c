/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include "iotlb.h"
#include "macro.h"
#include "tests.h"

#define MEM_SIZE  (1u << 20)
#define MEM_UADDR UINT64_C(0x7f0000000000)
#define PAGE      0x1000u

typedef struct Fixture {
        Iotlb t;
        GuestMemory mem;
        int memfd;
} Fixture;

static void fixture_init(Fixture *f) {
        const char *reason = NULL;
        iotlb_init(&f->t);
        guest_memory_init(&f->mem);
        f->memfd = memfd_create("guest", MFD_CLOEXEC);
        ASSERT(f->memfd >= 0);
        ASSERT(ftruncate(f->memfd, MEM_SIZE) == 0);
        VuMemRegion r = { .guest_phys_addr = 0, .memory_size = MEM_SIZE, .userspace_addr = MEM_UADDR };
        ASSERT_EQ(guest_memory_add(&f->mem, &r, f->memfd, &reason), 0);
}

static void fixture_done(Fixture *f) {
        iotlb_clear(&f->t);
        guest_memory_clear(&f->mem);
        close(f->memfd);
}

static int msg(Fixture *f, uint8_t type, uint64_t iova, uint64_t size, uint64_t uaddr, uint8_t perm,
               const char **ret_reason) {
        VuIotlbMsg m = { .iova = iova, .size = size, .uaddr = uaddr, .perm = perm, .type = type };
        return iotlb_apply(&f->t, &f->mem, &m, ret_reason);
}

static void update(Fixture *f, uint64_t iova, uint64_t size, uint64_t uaddr) {
        const char *reason = NULL;
        ASSERT_EQ(msg(f, VU_IOTLB_UPDATE, iova, size, uaddr, VU_ACCESS_RW, &reason), 0);
}

static void invalidate(Fixture *f, uint64_t iova, uint64_t size) {
        const char *reason = NULL;
        ASSERT_EQ(msg(f, VU_IOTLB_INVALIDATE, iova, size, 0, 0, &reason), 0);
}

/* The table is sorted and disjoint, whatever came in. */
static void check_table(const Iotlb *t) {
        for (unsigned i = 0; i < t->n; i++) {
                ASSERT(t->entries[i].size > 0);
                ASSERT(t->entries[i].iova + (t->entries[i].size - 1) >= t->entries[i].iova);
                if (i > 0)
                        ASSERT(t->entries[i - 1].iova + t->entries[i - 1].size - 1 < t->entries[i].iova);
        }
}

static uint64_t translate(const Fixture *f, uint64_t iova, uint64_t len) {
        uint64_t u = 0;
        ASSERT_EQ(iotlb_translate(&f->t, iova, len, &u), 0);
        return u;
}

static void test_update_translate(void) {
        Fixture f;
        uint64_t u;

        fixture_init(&f);
        ASSERT_EQ(iotlb_translate(&f.t, 0xfffe0000, 4, &u), -EFAULT);     /* empty: a miss */
        update(&f, 0xfffe0000, PAGE, MEM_UADDR + 0x5000);
        update(&f, 0x10000, PAGE, MEM_UADDR + 0x9000);
        ASSERT_EQ(f.t.n, 2);
        ASSERT_EQ(f.t.entries[0].iova, 0x10000);                        /* sorted */
        ASSERT_EQ(translate(&f, 0xfffe0000, 4), MEM_UADDR + 0x5000);
        ASSERT_EQ(translate(&f, 0xfffe0ffc, 4), MEM_UADDR + 0x5ffc);
        ASSERT_EQ(iotlb_translate(&f.t, 0xfffe0ffe, 4, &u), -EFAULT);   /* runs off the page */
        ASSERT_EQ(iotlb_translate(&f.t, 0xfffdfffe, 4, &u), -EFAULT);   /* starts before it */
        ASSERT_EQ(iotlb_translate(&f.t, 0x11000, 1, &u), -EFAULT);
        ASSERT_EQ(iotlb_translate(&f.t, UINT64_MAX, 2, &u), -EINVAL);   /* wraps */
        ASSERT_EQ(iotlb_translate(&f.t, 0x10000, 0, &u), -EINVAL);

        /* a range across two pages: only when they continue each other in both spaces */
        update(&f, 0xfffe1000, PAGE, MEM_UADDR + 0x6000);
        ASSERT_EQ(translate(&f, 0xfffe0800, 0x1000), MEM_UADDR + 0x5800);
        update(&f, 0xfffe2000, PAGE, MEM_UADDR + 0x20000);             /* elsewhere in memory */
        ASSERT_EQ(iotlb_translate(&f.t, 0xfffe1800, 0x1000, &u), -EFAULT);
        check_table(&f.t);
        fixture_done(&f);
}

static void test_overlapping_updates(void) {
        Fixture f;

        fixture_init(&f);
        update(&f, 0x10000, 4 * PAGE, MEM_UADDR);
        /* a later update wins over what it covers; the rest of the old entry stays */
        update(&f, 0x11000, PAGE, MEM_UADDR + 0x80000);
        check_table(&f.t);
        ASSERT_EQ(f.t.n, 3);
        ASSERT_EQ(translate(&f, 0x10000, 4), MEM_UADDR);
        ASSERT_EQ(translate(&f, 0x11000, 4), MEM_UADDR + 0x80000);
        ASSERT_EQ(translate(&f, 0x12000, 4), MEM_UADDR + 0x2000);
        /* one covering everything replaces all of it */
        update(&f, 0x0, 0x100000, MEM_UADDR);
        check_table(&f.t);
        ASSERT_EQ(f.t.n, 1);
        ASSERT_EQ(translate(&f, 0x11000, 4), MEM_UADDR + 0x11000);
        /* the same update twice is one entry */
        update(&f, 0x0, 0x100000, MEM_UADDR);
        ASSERT_EQ(f.t.n, 1);
        fixture_done(&f);
}

static void test_invalidations(void) {
        Fixture f;
        uint64_t u;

        fixture_init(&f);
        update(&f, 0x10000, 8 * PAGE, MEM_UADDR);
        invalidate(&f, 0x13000, PAGE);                  /* a hole in the middle: two entries */
        check_table(&f.t);
        ASSERT_EQ(f.t.n, 2);
        ASSERT_EQ(iotlb_translate(&f.t, 0x13000, 4, &u), -EFAULT);
        ASSERT_EQ(translate(&f, 0x14000, 4), MEM_UADDR + 0x4000);
        ASSERT_EQ(translate(&f, 0x12ffc, 4), MEM_UADDR + 0x2ffc);
        invalidate(&f, 0xf000, 0x2000);                 /* the head */
        ASSERT_EQ(iotlb_translate(&f.t, 0x10000, 4, &u), -EFAULT);
        ASSERT_EQ(translate(&f, 0x11000, 4), MEM_UADDR + 0x1000);
        invalidate(&f, 0x17800, 0x10000);               /* the tail */
        ASSERT_EQ(translate(&f, 0x177fc, 4), MEM_UADDR + 0x77fc);
        ASSERT_EQ(iotlb_translate(&f.t, 0x17800, 4, &u), -EFAULT);
        check_table(&f.t);
        invalidate(&f, 0x0, 0);                         /* size 0: nothing */
        ASSERT_EQ(f.t.n, 2);
        /* a range that runs past the end of the address space stops there: everything goes */
        invalidate(&f, 0x0, UINT64_MAX);
        invalidate(&f, 0x1000, UINT64_MAX);
        update(&f, UINT64_MAX - PAGE + 1, PAGE, MEM_UADDR);   /* the last page of the space */
        invalidate(&f, 0x1000, UINT64_MAX);
        ASSERT_EQ(f.t.n, 0);
        /* invalidating what was never mapped is no error */
        invalidate(&f, 0x50000, PAGE);
        fixture_done(&f);
}

static void test_hostile_entries(void) {
        Fixture f;
        const char *reason = NULL;

        fixture_init(&f);
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, UINT64_MAX - 10, 0x100, MEM_UADDR, VU_ACCESS_RW, &reason), -EINVAL);
        ASSERT_CONTAINS(reason, "wraps");
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x1000, 0x100, UINT64_MAX - 10, VU_ACCESS_RW, &reason), -EINVAL);
        ASSERT_CONTAINS(reason, "wraps");
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x1000, 0, MEM_UADDR, VU_ACCESS_RW, &reason), -EINVAL);
        ASSERT_CONTAINS(reason, "size 0");
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x1000, PAGE, MEM_UADDR, 0, &reason), -EINVAL);
        ASSERT_CONTAINS(reason, "permission");
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x1000, PAGE, MEM_UADDR, 7, &reason), -EINVAL);
        ASSERT_EQ(msg(&f, VU_IOTLB_MISS, 0x1000, PAGE, MEM_UADDR, VU_ACCESS_RO, &reason), -EINVAL);
        ASSERT_CONTAINS(reason, "neither an UPDATE");
        ASSERT_EQ(msg(&f, VU_IOTLB_ACCESS_FAIL, 0x1000, PAGE, MEM_UADDR, VU_ACCESS_RO, &reason), -EINVAL);
        ASSERT_EQ(msg(&f, 0, 0x1000, PAGE, MEM_UADDR, VU_ACCESS_RO, &reason), -EINVAL);
        ASSERT_EQ(f.t.n, 0);

        /* outside the memory table (before, after, across its end): not kept, but what it
         * covered is gone all the same */
        update(&f, 0x5000, PAGE, MEM_UADDR);
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x5000, PAGE, MEM_UADDR - PAGE, VU_ACCESS_RW, &reason), -ERANGE);
        ASSERT_CONTAINS(reason, "outside the memory table");
        ASSERT_EQ(f.t.n, 0);
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x5000, 2 * PAGE, MEM_UADDR + MEM_SIZE - PAGE, VU_ACCESS_RW, &reason), -ERANGE);
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x5000, PAGE, 0x1000, VU_ACCESS_RO, &reason), -ERANGE);
        ASSERT_EQ(f.t.n, 0);
        ASSERT_EQ(f.t.not_kept, 3);
        fixture_done(&f);
}

static void test_bound(void) {
        Fixture f;
        const char *reason = NULL;

        fixture_init(&f);
        /* every other page, so that no two entries continue each other */
        for (unsigned i = 0; i < IOTLB_SHADOW_MAX_ENTRIES; i++)
                update(&f, (uint64_t) i * 2 * PAGE, PAGE, MEM_UADDR + (i % 128) * PAGE);
        ASSERT_EQ(f.t.n, IOTLB_SHADOW_MAX_ENTRIES);
        ASSERT_EQ(msg(&f, VU_IOTLB_UPDATE, 0x10000000, PAGE, MEM_UADDR, VU_ACCESS_RW, &reason), -ENOSPC);
        ASSERT_CONTAINS(reason, "full");
        ASSERT_EQ(f.t.n, IOTLB_SHADOW_MAX_ENTRIES);
        /* replacing an entry still works when full */
        update(&f, 0, PAGE, MEM_UADDR + 0x10000);
        ASSERT_EQ(translate(&f, 0, 4), MEM_UADDR + 0x10000);
        /* an invalidation that would split an entry when full drops it whole (a miss later) */
        update(&f, 2 * PAGE, PAGE, MEM_UADDR);
        invalidate(&f, 2 * PAGE + 0x100, 0x100);
        ASSERT_EQ(f.t.n, IOTLB_SHADOW_MAX_ENTRIES - 1);
        uint64_t u;
        ASSERT_EQ(iotlb_translate(&f.t, 2 * PAGE, 4, &u), -EFAULT);
        check_table(&f.t);
        /* room again: the next update is kept */
        update(&f, 0x10000000, PAGE, MEM_UADDR);
        ASSERT_EQ(f.t.n, IOTLB_SHADOW_MAX_ENTRIES);
        /* memory: never more than the bound */
        ASSERT(f.t.allocated <= IOTLB_SHADOW_MAX_ENTRIES);
        fixture_done(&f);
}

/* Random updates and invalidations against a page-granular model of the address space. */
static void test_against_model(void) {
        enum { PAGES = 256 };
        uint64_t model[PAGES];          /* 0: unmapped, else the uaddr of the page */
        Fixture f;
        unsigned seed = 12345;

        fixture_init(&f);
        memset(model, 0, sizeof(model));
        for (unsigned step = 0; step < 20000; step++) {
                seed = seed * 1103515245 + 12345;
                unsigned first = (seed >> 8) % PAGES, n = 1 + (seed >> 20) % 8;
                if (first + n > PAGES)
                        n = PAGES - first;
                if ((seed >> 4) % 3) {
                        uint64_t uaddr = MEM_UADDR + ((seed >> 12) % 128) * PAGE;
                        update(&f, (uint64_t) first * PAGE, (uint64_t) n * PAGE, uaddr);
                        for (unsigned i = 0; i < n; i++)
                                model[first + i] = uaddr + (uint64_t) i * PAGE;
                } else {
                        invalidate(&f, (uint64_t) first * PAGE, (uint64_t) n * PAGE);
                        for (unsigned i = 0; i < n; i++)
                                model[first + i] = 0;
                }
                check_table(&f.t);
                for (unsigned p = 0; p < PAGES; p++) {
                        uint64_t u = 0;
                        int r = iotlb_translate(&f.t, (uint64_t) p * PAGE + 8, 4, &u);
                        if (model[p]) {
                                ASSERT_EQ(r, 0);
                                ASSERT_EQ(u, model[p] + 8);
                        } else
                                ASSERT_EQ(r, -EFAULT);
                }
        }
        fixture_done(&f);
}

RUN_TESTS(TEST_CASE(test_update_translate),
          TEST_CASE(test_overlapping_updates),
          TEST_CASE(test_invalidations),
          TEST_CASE(test_hostile_entries),
          TEST_CASE(test_bound),
          TEST_CASE(test_against_model))
