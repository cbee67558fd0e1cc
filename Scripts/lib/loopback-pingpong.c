// The floor under any request/response latency on this machine: a C client and a C server (a
// forked child) over loopback TCP with blocking sockets and TCP_NODELAY, one 184-byte request and
// one 48-byte reply at a time (the sizes of a 100-byte append and its acknowledgement), 20,000
// round trips. Prints p50 and p99. Port 7599 on 127.0.0.1 only.
//
//   gcc -O2 -o /tmp/loopback-pingpong Scripts/lib/loopback-pingpong.c && /tmp/loopback-pingpong
#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe-timing.h"

static int receive_all(int fd, char *bytes, int count) {
    for (int got = 0; got < count;) {
        ssize_t result = recv(fd, bytes + got, (size_t)(count - got), 0);
        if (result <= 0) return -1;
        got += (int)result;
    }
    return 0;
}

int main(void) {
    enum { requests = 20000, request_bytes = 184, reply_bytes = 48 };
    int one = 1;
    struct sockaddr_in address = {0};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(7599);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1) != 0) {
        perror("127.0.0.1:7599");
        return 1;
    }
    pid_t server = fork();
    if (server == 0) {
        int connection = accept(listener, NULL, NULL);
        setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        char bytes[request_bytes];
        while (receive_all(connection, bytes, request_bytes) == 0) send(connection, bytes, reply_bytes, 0);
        _exit(0);
    }
    int client = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(client, (struct sockaddr *)&address, sizeof address) != 0) { perror("connect"); return 1; }
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static long long latencies[requests];
    char bytes[request_bytes] = {0};
    for (int index = 0; index < requests; index++) {
        long long started = nanos();
        send(client, bytes, request_bytes, 0);
        if (receive_all(client, bytes, reply_bytes) != 0) return 1;
        latencies[index] = nanos() - started;
    }
    close(client);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    qsort(latencies, requests, sizeof latencies[0], compare_nanos);
    printf("loopback TCP round trip: p50 %lld us, p99 %lld us\n", latencies[requests / 2] / 1000, latencies[requests * 99 / 100] / 1000);
    return 0;
}
