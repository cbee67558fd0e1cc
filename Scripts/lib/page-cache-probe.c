// How fast buffered writes fill the page cache on this machine, with no RingLog code involved:
// io_uring writes of 1 MiB (one at a time) from a 64 MiB buffer into a fresh fallocated file,
// 2 GiB in all, then the file is deleted. Run it a few times in a row and once after a pause:
// on a VM whose balloon driver reports freed memory to the host, the first run after a pause pays
// for the host faulting the memory back in, the runs right after reuse the same pages.
//
//   gcc -O2 -o /tmp/page-cache-probe Scripts/lib/page-cache-probe.c -luring
//   /tmp/page-cache-probe DIRECTORY; /tmp/page-cache-probe DIRECTORY; sleep 15; /tmp/page-cache-probe DIRECTORY
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe-timing.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s DIRECTORY\n", argv[0]); return 64; }
    const size_t source_bytes = 64u << 20, chunk = 1u << 20, total = (size_t)2 << 30;
    char path[4096];
    snprintf(path, sizeof path, "%s/page-cache-probe.tmp", argv[1]);
    char *source = aligned_alloc(4096, source_bytes);
    if (!source) return 1;
    memset(source, 1, source_bytes);
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0644);
    if (fd < 0 || fallocate(fd, 0, 0, (off_t)total) != 0) { perror(path); return 1; }
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0) { fprintf(stderr, "io_uring unavailable\n"); return 1; }
    long long started = nanos();
    for (size_t offset = 0; offset < total; offset += chunk) {
        struct io_uring_sqe *entry = io_uring_get_sqe(&ring);
        io_uring_prep_write(entry, fd, source + offset % source_bytes, (unsigned)chunk, offset);
        io_uring_submit_and_wait(&ring, 1);
        struct io_uring_cqe *completion;
        io_uring_wait_cqe(&ring, &completion);
        if (completion->res != (int)chunk) { fprintf(stderr, "write returned %d\n", completion->res); return 1; }
        io_uring_cqe_seen(&ring, completion);
    }
    double elapsed = (double)(nanos() - started) / 1e9;
    printf("buffered io_uring writes of fresh data: %.0f MB/s\n", (double)total / elapsed / 1e6);
    unlink(path);
    return 0;
}
