// Linux calls that Swift's Glibc module does not expose.
#define _GNU_SOURCE
#include "ringlog_support.h"

#include <sys/eventfd.h>

int ringlog_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }
