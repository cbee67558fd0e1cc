// A minimal load generator in C, to tell how much of a benchmark's figure is the client: epoll,
// non-blocking sockets, CONNECTIONS connections each keeping DEPTH durable appends of one record
// of RECORD_BYTES in flight, for SECONDS after one second of warm-up. Requests are pipelined and
// answers matched in order; every answer must be a success. Prints appends per second. It does
// what `ringlog bench produce` does, with nothing else: no histogram, no record framing library.
//
//   gcc -O2 -msse4.2 -o /tmp/append-load Scripts/lib/append-load.c
//   /tmp/append-load HOST PORT LOG_ID CONNECTIONS DEPTH RECORD_BYTES SECONDS
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <nmmintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "probe-timing.h"

static uint32_t crc32c(const uint8_t *bytes, size_t count) {
    uint64_t crc = 0xFFFFFFFFu;
    size_t index = 0;
    for (; index + 8 <= count; index += 8) {
        uint64_t word;
        memcpy(&word, bytes + index, 8);
        crc = _mm_crc32_u64(crc, word);
    }
    for (; index < count; index++) crc = _mm_crc32_u8((uint32_t)crc, bytes[index]);
    return (uint32_t)crc ^ 0xFFFFFFFFu;
}

static void put32(uint8_t *at, uint32_t value) { memcpy(at, &value, 4); }
static void put64(uint8_t *at, uint64_t value) { memcpy(at, &value, 8); }

enum { header_bytes = 32, batch_header_bytes = 48, response_bytes = 48 };

struct connection {
    int fd;
    uint64_t next_id;
    uint64_t expected_id;
    int in_flight;
    uint8_t received[response_bytes];
    int received_count;
    uint8_t *pending;   // bytes of requests not yet sent
    int pending_count;
};

static uint8_t *batch;
static int batch_count;
static uint32_t log_id;

// Appends one request (header and batch) to the connection's outgoing bytes.
static void queue_request(struct connection *c) {
    uint8_t *request = c->pending + c->pending_count;
    memset(request, 0, header_bytes);
    request[0] = 'R';
    request[1] = 'L';
    request[2] = 1;
    request[3] = 0x20;
    put32(request + 4, (uint32_t)batch_count);
    put64(request + 8, c->next_id++);
    put32(request + 16, log_id);
    put32(request + 28, crc32c(request, 28));
    memcpy(request + header_bytes, batch, (size_t)batch_count);
    c->pending_count += header_bytes + batch_count;
    c->in_flight++;
}

static int flush(struct connection *c) {
    int sent = 0;
    while (sent < c->pending_count) {
        ssize_t result = send(c->fd, c->pending + sent, (size_t)(c->pending_count - sent), MSG_NOSIGNAL);
        if (result < 0) {
            if (errno == EAGAIN) break;
            return -1;
        }
        sent += (int)result;
    }
    memmove(c->pending, c->pending + sent, (size_t)(c->pending_count - sent));
    c->pending_count -= sent;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s HOST PORT LOG_ID CONNECTIONS DEPTH RECORD_BYTES SECONDS\n", argv[0]);
        return 64;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), connections = atoi(argv[4]), depth = atoi(argv[5]), record_bytes = atoi(argv[6]);
    double seconds = atof(argv[7]);
    log_id = (uint32_t)strtoul(argv[3], NULL, 10);

    // One batch holding one record (u32 length, then the bytes); the server fields stay zero.
    int payload_bytes = 4 + record_bytes;
    batch_count = batch_header_bytes + payload_bytes;
    batch = calloc(1, (size_t)batch_count);
    memcpy(batch, "RLB1", 4);
    put32(batch + 32, (uint32_t)payload_bytes);
    put32(batch + 36, 1);
    put32(batch + batch_header_bytes, (uint32_t)record_bytes);
    memset(batch + batch_header_bytes + 4, 'x', (size_t)record_bytes);
    put32(batch + 28, crc32c(batch + 32, (size_t)(batch_count - 32)));

    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, host, &address.sin_addr);
    int poller = epoll_create1(0);
    struct connection *all = calloc((size_t)connections, sizeof *all);
    for (int index = 0; index < connections; index++) {
        struct connection *c = &all[index];
        c->fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(c->fd, (struct sockaddr *)&address, sizeof address) != 0) {
            perror("connect");
            return 2;
        }
        fcntl(c->fd, F_SETFL, O_NONBLOCK);
        c->next_id = c->expected_id = 1;
        c->pending = malloc((size_t)(depth + 1) * (size_t)(header_bytes + batch_count));
        for (int request = 0; request < depth; request++) queue_request(c);
        if (flush(c) != 0) return 2;
        struct epoll_event event = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(poller, EPOLL_CTL_ADD, c->fd, &event);
    }

    long long started = nanos(), measured_from = started + 1000000000LL, until = measured_from + (long long)(seconds * 1e9);
    long long acknowledged = 0;
    struct epoll_event events[256];
    while (nanos() < until) {
        int ready = epoll_wait(poller, events, 256, 100);
        for (int index = 0; index < ready; index++) {
            struct connection *c = events[index].data.ptr;
            uint8_t bytes[64 << 10];
            ssize_t count = recv(c->fd, bytes, sizeof bytes, 0);
            if (count <= 0) {
                if (count < 0 && errno == EAGAIN) continue;
                fprintf(stderr, "the server closed a connection\n");
                return 1;
            }
            for (ssize_t at = 0; at < count;) {
                int take = response_bytes - c->received_count;
                if (take > count - at) take = (int)(count - at);
                memcpy(c->received + c->received_count, bytes + at, (size_t)take);
                c->received_count += take;
                at += take;
                if (c->received_count < response_bytes) break;
                c->received_count = 0;
                uint16_t status;
                uint64_t id;
                memcpy(&status, c->received + 16, 2);
                memcpy(&id, c->received + 8, 8);
                if (status != 0 || id != c->expected_id) {
                    fprintf(stderr, "request %llu: status %u\n", (unsigned long long)id, status);
                    return 1;
                }
                c->expected_id++;
                c->in_flight--;
                if (nanos() >= measured_from) acknowledged++;
                queue_request(c);
            }
            if (flush(c) != 0) return 1;
        }
    }
    double elapsed = (double)(nanos() - measured_from) / 1e9;
    printf("appends/s %.0f\n", (double)acknowledged / elapsed);
    return 0;
}
