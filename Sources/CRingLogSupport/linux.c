// Linux calls that Swift's Glibc module does not expose.
#define _GNU_SOURCE
#include "ringlog_support.h"

#include <errno.h>
#include <malloc.h>
#include <sys/eventfd.h>
#include <sys/uio.h>

int ringlog_eventfd(void) { return eventfd(0, EFD_CLOEXEC); }

int64_t ringlog_pwrite_with_flags(int fd, const void *buffer, size_t length, int64_t position, int flags) {
    struct iovec vector = {.iov_base = (void *)buffer, .iov_len = length};
    ssize_t written = pwritev2(fd, &vector, 1, (off_t)position, flags);
    return written < 0 ? -(int64_t)errno : (int64_t)written;
}

int ringlog_set_mmap_threshold(int bytes) { return mallopt(M_MMAP_THRESHOLD, bytes); }

void ringlog_allocator_stats(uint64_t *in_use, uint64_t *mapped, uint64_t *free_kept) {
    struct mallinfo2 info = mallinfo2();
    *in_use = info.uordblks;
    *mapped = info.hblkhd;
    *free_kept = info.fordblks;
}
