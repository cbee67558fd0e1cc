// A Kafka load generator on librdkafka, for Scripts/bench-kafka: produces fixed-size records to
// one partition over one broker connection as fast as acknowledgements allow, or reads a
// partition from its start, and prints one JSON line with what it measured.
//
//   kafka-bench produce BROKER TOPIC RECORD_BYTES SECONDS [ACKS [BATCH_BYTES [IN_FLIGHT]]]
//   kafka-bench consume BROKER TOPIC SECONDS
//
// Produce: a warm-up second, then SECONDS measured; records/s counts records whose delivery
// report came back without error (with acks=all: durable, after the server's fdatasync).
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile uint64_t failed = 0;

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *message, void *opaque) {
    (void)rk;
    (void)opaque;
    if (message->err) {
        if (failed++ < 5) fprintf(stderr, "delivery failed: %s\n", rd_kafka_err2str(message->err));
    }
}

static void set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char error[256];
    if (rd_kafka_conf_set(conf, name, value, error, sizeof error) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, "%s=%s: %s\n", name, value, error);
        exit(64);
    }
}

static int produce(const char *broker, const char *topic, size_t record_bytes, double seconds, const char *acks, const char *batch_bytes,
                   const char *in_flight) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", broker);
    set(conf, "acks", acks);
    set(conf, "linger.ms", "5");
    set(conf, "batch.size", batch_bytes);
    set(conf, "max.in.flight.requests.per.connection", in_flight);
    set(conf, "queue.buffering.max.messages", "2000000");
    set(conf, "queue.buffering.max.kbytes", "1048576");
    set(conf, "compression.codec", "none");
    set(conf, "socket.nagle.disable", "true");
    // Delivery reports for failures only: a report per record costs the producer more than the
    // record itself. Acknowledged = handed over - still queued or in flight (rd_kafka_outq_len).
    set(conf, "delivery.report.only.error", "true");
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char error[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, error, sizeof error);
    if (!rk) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    char *payload = malloc(record_bytes);
    for (size_t i = 0; i < record_bytes; i++) payload[i] = (char)('a' + i % 26);
    rd_kafka_topic_t *handle = rd_kafka_topic_new(rk, topic, NULL);
    enum { GROUP = 1000 };
    static rd_kafka_message_t messages[GROUP];
    double start = now_seconds();
    double measure_from = start + 1.0, measure_until = measure_from + seconds;
    uint64_t at_start = 0, handed = 0;
    int measuring = 0;
#define ACKED() (handed - (uint64_t)rd_kafka_outq_len(rk) - failed)
    for (;;) {
        double now = now_seconds();
        if (!measuring && now >= measure_from) {
            at_start = ACKED();
            measuring = 1;
        }
        if (now >= measure_until) break;
        memset(messages, 0, sizeof messages);
        for (int i = 0; i < GROUP; i++) {
            messages[i].payload = payload;
            messages[i].len = record_bytes;
        }
        // Records are handed over in groups of 1000 without copying (every record points at the
        // same payload, which lives until the end): librdkafka's cheapest way in.
        int accepted = rd_kafka_produce_batch(handle, 0, 0, messages, GROUP);
        handed += (uint64_t)(accepted > 0 ? accepted : 0);
        if (accepted < GROUP) {
            for (int i = 0; i < GROUP; i++) {
                if (messages[i].err && messages[i].err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
                    fprintf(stderr, "produce: %s\n", rd_kafka_err2str(messages[i].err));
                    return 1;
                }
            }
            rd_kafka_poll(rk, 1);
        } else {
            rd_kafka_poll(rk, 0);
        }
    }
    uint64_t in_window = ACKED() - at_start;
    double elapsed = now_seconds() - measure_from;
    rd_kafka_flush(rk, 30000);
    printf("{\"records\": %llu, \"seconds\": %.3f, \"recordsPerSecond\": %.0f, \"failed\": %llu, \"recordBytes\": %zu}\n",
           (unsigned long long)in_window, elapsed, (double)in_window / elapsed, (unsigned long long)failed, record_bytes);
    rd_kafka_topic_destroy(handle);
    rd_kafka_destroy(rk);
    free(payload);
    return failed ? 2 : 0;
}

static int consume(const char *broker, const char *topic, double seconds) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    set(conf, "bootstrap.servers", broker);
    set(conf, "group.id", "kafka-bench");
    set(conf, "enable.auto.commit", "false");
    // A catch-up read, as the native bench's: large fetches (the server caps one at its
    // --max-read-bytes, 4 MiB), and a local queue deep enough that librdkafka does not stop
    // fetching and back off while the application takes records out of it.
    set(conf, "fetch.wait.max.ms", "10");
    set(conf, "max.partition.fetch.bytes", "4194304");
    set(conf, "queued.min.messages", "1000000");
    set(conf, "enable.partition.eof", "true");
    char error[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
    if (!rk) {
        fprintf(stderr, "%s\n", error);
        return 1;
    }
    rd_kafka_topic_partition_list_t *assignment = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(assignment, topic, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, assignment);
    uint64_t records = 0, bytes = 0;
    double start = 0, deadline = now_seconds() + seconds + 10;
    for (;;) {
        rd_kafka_message_t *message = rd_kafka_consumer_poll(rk, 100);
        if (now_seconds() > deadline) break;
        if (!message) continue;
        if (message->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(message);
            if (records > 0) break;
            continue;
        }
        if (!message->err) {
            if (records == 0) start = now_seconds();
            records++;
            bytes += message->len;
        }
        rd_kafka_message_destroy(message);
    }
    double elapsed = now_seconds() - start;
    printf("{\"records\": %llu, \"seconds\": %.3f, \"recordsPerSecond\": %.0f, \"megabytesPerSecond\": %.1f}\n", (unsigned long long)records, elapsed,
           (double)records / elapsed, (double)bytes / elapsed / 1e6);
    rd_kafka_topic_partition_list_destroy(assignment);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && strcmp(argv[1], "produce") == 0)
        return produce(argv[2], argv[3], (size_t)atol(argv[4]), atof(argv[5]), argc > 6 ? argv[6] : "all", argc > 7 ? argv[7] : "65536",
                       argc > 8 ? argv[8] : "5");
    if (argc >= 5 && strcmp(argv[1], "consume") == 0) return consume(argv[2], argv[3], atof(argv[4]));
    fprintf(stderr, "usage: kafka-bench produce BROKER TOPIC RECORD_BYTES SECONDS [ACKS [BATCH_BYTES [IN_FLIGHT]]]\n"
                    "       kafka-bench consume BROKER TOPIC SECONDS\n");
    return 64;
}
