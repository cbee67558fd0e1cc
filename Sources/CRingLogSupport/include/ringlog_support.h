#ifndef RINGLOG_SUPPORT_H
#define RINGLOG_SUPPORT_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), zlib-style chaining:
/// `ringlog_crc32c(ringlog_crc32c(0, a, n), b, m)` equals the CRC of `a` followed by `b`.
/// Uses SSE4.2 with three interleaved streams when the CPU has it, else slicing-by-8.
uint32_t ringlog_crc32c(uint32_t crc, const void *buffer, size_t length);

/// The table-driven implementation alone, so tests can hold both paths to the same vectors.
uint32_t ringlog_crc32c_portable(uint32_t crc, const void *buffer, size_t length);

/// True when `ringlog_crc32c` runs on the SSE4.2 instruction.
bool ringlog_crc32c_is_hardware_accelerated(void);

/// eventfd(0, EFD_CLOEXEC): a descriptor another thread writes to wake the event loop.
int ringlog_eventfd(void);

/// pwritev2 of one buffer with RWF_* flags; the byte count, or -errno.
int64_t ringlog_pwrite_with_flags(int fd, const void *buffer, size_t length, int64_t position, int flags);

/// mallopt(M_MMAP_THRESHOLD, bytes): blocks of at least `bytes` are mapped on their own and
/// unmapped when freed; setting it also stops glibc from raising the threshold by itself.
int ringlog_set_mmap_threshold(int bytes);

/// What glibc's allocator holds (mallinfo2, all arenas): bytes in use by live blocks in the heaps,
/// bytes in blocks mapped on their own, and free bytes kept in the heaps.
void ringlog_allocator_stats(uint64_t *in_use, uint64_t *mapped, uint64_t *free_kept);

#endif
