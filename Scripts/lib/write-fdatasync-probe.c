// The disk half of one durable append, with no RingLog code: an io_uring write of 152 bytes into
// space already written (as zero-ahead leaves it), then an fdatasync, one append at a time, 3,000
// times. With argument 1 the two are linked (IOSQE_IO_LINK) and submitted together; with 0 the
// fdatasync is submitted when the write completes, as ringlogd does; with 2 it is one write with
// RWF_DSYNC. Prints p50 and p99, and the process's CPU time per append (io_uring's worker threads
// included).
//
//   gcc -O2 -o /tmp/write-fdatasync-probe Scripts/lib/write-fdatasync-probe.c -luring
//   /tmp/write-fdatasync-probe DIRECTORY 0; /tmp/write-fdatasync-probe DIRECTORY 1
#include <fcntl.h>
#include <sys/resource.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "probe-timing.h"

static int complete(struct io_uring *ring, int count) {
    struct io_uring_cqe *completion;
    for (int index = 0; index < count; index++) {
        if (io_uring_wait_cqe(ring, &completion) != 0) return -1;
        int result = completion->res;
        io_uring_cqe_seen(ring, completion);
        if (result < 0) { fprintf(stderr, "operation failed: %s\n", strerror(-result)); return -1; }
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s DIRECTORY 0|1|2\n", argv[0]); return 64; }
    enum { appends = 3000, append_bytes = 152 };
    int mode = atoi(argv[2]);
    char path[4096];
    snprintf(path, sizeof path, "%s/write-fdatasync-probe.tmp", argv[1]);
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
    if (fd < 0) { perror(path); return 1; }
    static char zeros[1 << 20];
    if (pwrite(fd, zeros, sizeof zeros, 0) != (ssize_t)sizeof zeros) { perror("pre-write"); return 1; }
    fdatasync(fd);
    struct io_uring ring;
    if (io_uring_queue_init(8, &ring, 0) != 0) { fprintf(stderr, "io_uring unavailable\n"); return 1; }
    static long long latencies[appends];
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    char bytes[append_bytes];
    memset(bytes, 7, sizeof bytes);
    for (int index = 0; index < appends; index++) {
        long long started = nanos();
        struct io_uring_sqe *entry = io_uring_get_sqe(&ring);
        io_uring_prep_write(entry, fd, bytes, append_bytes, (off_t)index * append_bytes);
        if (mode == 2) {
            entry->rw_flags = RWF_DSYNC;
            io_uring_submit(&ring);
            if (complete(&ring, 1) != 0) return 1;
        } else if (mode == 1) {
            entry->flags |= IOSQE_IO_LINK;
            io_uring_prep_fsync(io_uring_get_sqe(&ring), fd, IORING_FSYNC_DATASYNC);
            io_uring_submit(&ring);
            if (complete(&ring, 2) != 0) return 1;
        } else {
            io_uring_submit(&ring);
            if (complete(&ring, 1) != 0) return 1;
            io_uring_prep_fsync(io_uring_get_sqe(&ring), fd, IORING_FSYNC_DATASYNC);
            io_uring_submit(&ring);
            if (complete(&ring, 1) != 0) return 1;
        }
        latencies[index] = nanos() - started;
    }
    getrusage(RUSAGE_SELF, &after);
    long long cpu_micros = (after.ru_utime.tv_sec - before.ru_utime.tv_sec + after.ru_stime.tv_sec - before.ru_stime.tv_sec) * 1000000LL
        + (after.ru_utime.tv_usec - before.ru_utime.tv_usec) + (after.ru_stime.tv_usec - before.ru_stime.tv_usec);
    qsort(latencies, appends, sizeof latencies[0], compare_nanos);
    static const char *names[] = {"separate write + fdatasync", "linked write + fdatasync", "write with RWF_DSYNC"};
    printf("%s: p50 %lld us, p99 %lld us, cpu %lld us per append\n", names[mode == 2 ? 2 : mode == 1],
        latencies[appends / 2] / 1000, latencies[appends * 99 / 100] / 1000, cpu_micros / appends);
    unlink(path);
    return 0;
}
