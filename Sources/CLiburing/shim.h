#ifndef RINGLOG_CLIBURING_SHIM_H
#define RINGLOG_CLIBURING_SHIM_H

// liburing.h defines _XOPEN_SOURCE/_GNU_SOURCE itself. Including the system headers it pulls in
// first keeps Glibc's and this module's view of fd_set and friends identical; otherwise a Swift file
// that imports Glibc before CLiburing fails to build.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/select.h>
#include <signal.h>
#include <time.h>
#include <fcntl.h>
#include <sched.h>
// swift-system includes the kernel's copy of this header; liburing ships another under the same
// include guard. Taking the kernel's first makes both modules agree on struct io_uring_sqe.
#include <linux/io_uring.h>
#include <liburing.h>

// IOSQE_* are macros over an enum that Swift cannot import; copies as plain constants.
static const unsigned char RINGLOG_IOSQE_FIXED_FILE = IOSQE_FIXED_FILE;
static const unsigned char RINGLOG_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const unsigned char RINGLOG_IOSQE_IO_DRAIN = IOSQE_IO_DRAIN;
static const unsigned char RINGLOG_IOSQE_ASYNC = IOSQE_ASYNC;
static const unsigned char RINGLOG_IOSQE_BUFFER_SELECT = IOSQE_BUFFER_SELECT;
static const unsigned char RINGLOG_IOSQE_CQE_SKIP_SUCCESS = IOSQE_CQE_SKIP_SUCCESS;

// GNU-only in <fcntl.h>, which Swift's Glibc module does not show. liburing.h defined _GNU_SOURCE,
// so the macro is visible here.
static const unsigned int RINGLOG_SYNC_FILE_RANGE_WRITE_AND_WAIT = SYNC_FILE_RANGE_WRITE_AND_WAIT;

// RWF_DONTCACHE (Linux 6.14, include/uapi/linux/fs.h) is newer than this machine's headers; the
// value is part of the kernel ABI. Older kernels reject the flag with EOPNOTSUPP.
#ifdef RWF_DONTCACHE
static const unsigned int RINGLOG_RWF_DONTCACHE = RWF_DONTCACHE;
#else
static const unsigned int RINGLOG_RWF_DONTCACHE = 0x00000080;
#endif

#endif
