// CRC32C for RingLog: every stored batch carries one, so this sits on the append, recovery and
// read paths. The SSE4.2 crc32 instruction has a latency of three cycles and a throughput of one,
// so three independent streams keep it busy; their partial CRCs are merged with precomputed
// "append N zero bytes" operators (linear maps over GF(2), applied through byte tables).

#include "ringlog_support.h"

#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

#define CASTAGNOLI_REFLECTED 0x82f63b78u
#define STREAM_BYTES_LONG 8192
#define STREAM_BYTES_SHORT 256

static uint32_t slicing_table[8][256];
static uint32_t shift_long_table[4][256];
static uint32_t shift_short_table[4][256];
static bool hardware_available;

// Applies a 32x32 GF(2) matrix (column i is the image of bit i) to a vector.
static uint32_t gf2_apply(const uint32_t matrix[32], uint32_t vector) {
    uint32_t result = 0;
    for (int bit = 0; vector != 0; bit++, vector >>= 1) {
        if (vector & 1) result ^= matrix[bit];
    }
    return result;
}

// target = first then second (the operators commute: all are powers of one map).
static void gf2_compose(uint32_t target[32], const uint32_t first[32], const uint32_t second[32]) {
    uint32_t composed[32];
    for (int bit = 0; bit < 32; bit++) composed[bit] = gf2_apply(second, first[bit]);
    memcpy(target, composed, sizeof(composed));
}

// The operator that advances a raw (uninverted) CRC register over `length` zero bytes.
static void zero_bytes_operator(uint32_t result[32], size_t length) {
    uint32_t power[32];
    for (int bit = 0; bit < 32; bit++) {
        uint32_t register_value = 1u << bit;
        for (int step = 0; step < 8; step++) {
            register_value = (register_value >> 1) ^ ((register_value & 1) ? CASTAGNOLI_REFLECTED : 0);
        }
        power[bit] = register_value;
        result[bit] = 1u << bit;
    }
    while (length != 0) {
        if (length & 1) gf2_compose(result, result, power);
        gf2_compose(power, power, power);
        length >>= 1;
    }
}

static void fill_shift_table(uint32_t table[4][256], size_t length) {
    uint32_t op[32];
    zero_bytes_operator(op, length);
    for (int byte_index = 0; byte_index < 4; byte_index++) {
        for (uint32_t value = 0; value < 256; value++) {
            table[byte_index][value] = gf2_apply(op, value << (8 * byte_index));
        }
    }
}

static inline uint32_t shift_by_table(uint32_t table[4][256], uint32_t crc) {
    return table[0][crc & 0xff] ^ table[1][(crc >> 8) & 0xff] ^ table[2][(crc >> 16) & 0xff]
        ^ table[3][crc >> 24];
}

__attribute__((constructor)) static void ringlog_crc32c_init(void) {
    for (uint32_t value = 0; value < 256; value++) {
        uint32_t crc = value;
        for (int step = 0; step < 8; step++) crc = (crc >> 1) ^ ((crc & 1) ? CASTAGNOLI_REFLECTED : 0);
        slicing_table[0][value] = crc;
    }
    for (uint32_t value = 0; value < 256; value++) {
        uint32_t crc = slicing_table[0][value];
        for (int slice = 1; slice < 8; slice++) {
            crc = slicing_table[0][crc & 0xff] ^ (crc >> 8);
            slicing_table[slice][value] = crc;
        }
    }
    fill_shift_table(shift_long_table, STREAM_BYTES_LONG);
    fill_shift_table(shift_short_table, STREAM_BYTES_SHORT);
#if defined(__x86_64__)
    __builtin_cpu_init();
    hardware_available = __builtin_cpu_supports("sse4.2");
#endif
}

static inline uint64_t load_le64(const unsigned char *bytes) {
    uint64_t value;
    memcpy(&value, bytes, sizeof(value));
    return value; // x86-64 and aarch64 Linux are little-endian; CRC32C is defined over bytes in order.
}

static uint32_t raw_portable(uint32_t crc, const unsigned char *bytes, size_t length) {
    while (length >= 8) {
        uint64_t word = load_le64(bytes) ^ crc;
        crc = slicing_table[7][word & 0xff] ^ slicing_table[6][(word >> 8) & 0xff]
            ^ slicing_table[5][(word >> 16) & 0xff] ^ slicing_table[4][(word >> 24) & 0xff]
            ^ slicing_table[3][(word >> 32) & 0xff] ^ slicing_table[2][(word >> 40) & 0xff]
            ^ slicing_table[1][(word >> 48) & 0xff] ^ slicing_table[0][word >> 56];
        bytes += 8;
        length -= 8;
    }
    while (length--) crc = slicing_table[0][(crc ^ *bytes++) & 0xff] ^ (crc >> 8);
    return crc;
}

#if defined(__x86_64__)
// Three streams of `stream_bytes` each; returns the register after all 3 * stream_bytes bytes.
__attribute__((target("sse4.2"))) static inline uint64_t three_streams(
    uint64_t crc0, const unsigned char *bytes, size_t stream_bytes, uint32_t table[4][256]
) {
    uint64_t crc1 = 0, crc2 = 0;
    const unsigned char *end = bytes + stream_bytes;
    do {
        crc0 = _mm_crc32_u64(crc0, load_le64(bytes));
        crc1 = _mm_crc32_u64(crc1, load_le64(bytes + stream_bytes));
        crc2 = _mm_crc32_u64(crc2, load_le64(bytes + 2 * stream_bytes));
        bytes += 8;
    } while (bytes < end);
    crc0 = shift_by_table(table, (uint32_t)crc0) ^ (uint32_t)crc1;
    return shift_by_table(table, (uint32_t)crc0) ^ (uint32_t)crc2;
}

__attribute__((target("sse4.2"))) static uint32_t raw_hardware(
    uint32_t crc, const unsigned char *bytes, size_t length
) {
    uint64_t crc0 = crc;
    // Aligning pays only before the long three-stream runs; short inputs (request and batch
    // headers, 40 bytes or so, four per append) go straight to unaligned 8-byte steps.
    while (length >= 3 * STREAM_BYTES_SHORT && ((uintptr_t)bytes & 7) != 0) {
        crc0 = _mm_crc32_u8((uint32_t)crc0, *bytes++);
        length--;
    }
    while (length >= 3 * STREAM_BYTES_LONG) {
        crc0 = three_streams(crc0, bytes, STREAM_BYTES_LONG, shift_long_table);
        bytes += 3 * STREAM_BYTES_LONG;
        length -= 3 * STREAM_BYTES_LONG;
    }
    while (length >= 3 * STREAM_BYTES_SHORT) {
        crc0 = three_streams(crc0, bytes, STREAM_BYTES_SHORT, shift_short_table);
        bytes += 3 * STREAM_BYTES_SHORT;
        length -= 3 * STREAM_BYTES_SHORT;
    }
    while (length >= 8) {
        crc0 = _mm_crc32_u64(crc0, load_le64(bytes));
        bytes += 8;
        length -= 8;
    }
    while (length--) crc0 = _mm_crc32_u8((uint32_t)crc0, *bytes++);
    return (uint32_t)crc0;
}
#endif

uint32_t ringlog_crc32c_portable(uint32_t crc, const void *buffer, size_t length) {
    return ~raw_portable(~crc, (const unsigned char *)buffer, length);
}

uint32_t ringlog_crc32c(uint32_t crc, const void *buffer, size_t length) {
#if defined(__x86_64__)
    if (hardware_available) return ~raw_hardware(~crc, (const unsigned char *)buffer, length);
#endif
    return ringlog_crc32c_portable(crc, buffer, length);
}

bool ringlog_crc32c_is_hardware_accelerated(void) { return hardware_available; }
