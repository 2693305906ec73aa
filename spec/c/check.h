/* spec/c/check.h: what the C tests share: counting failures, and the line that ends a run. */
#ifndef SACM_SPEC_CHECK_H
#define SACM_SPEC_CHECK_H

#include <stdio.h>

static int failures;

static void fail(const char *what, const char *detail)
{
    failures++;
    fprintf(stderr, "FAIL %s: %s\n", what, detail);
}

/* Says how test `name` went (`passed`: what ran, when nothing failed); the exit status. */
static int finish(const char *name, const char *passed)
{
    if (failures) {
        fprintf(stderr, "%s: %d failure(s)\n", name, failures);
        return 1;
    }
    printf("%s: %s passed\n", name, passed);
    return 0;
}

#endif
