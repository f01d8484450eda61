/* The CHECK counters of mstest.h: one pair per test binary. */
#include "mstest.h"

int mst_pass, mst_fail;
