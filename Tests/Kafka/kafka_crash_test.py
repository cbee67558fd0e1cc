#!/usr/bin/env python3
"""kill -9 ringlogd under Kafka produce load, N times; then check what the producers were told.

Two producers run through every cycle, each numbering its records (the value is "<producer>
<number>"): an idempotent confluent-kafka (librdkafka) producer with acks=all, and a
kafka-python producer with acks=all and idempotence on. Both ride through the kills (their
retries go to the restarted server). After the last cycle every partition is read back from
offset 0 and checked:
  - every record whose delivery was reported successful is there (acks=all means fdatasync'd);
  - no record is there twice (the idempotent producers' retries are recognised, across crashes,
    by the producer table the checkpoint and recovery keep);
  - each producer's records are in the order it sent them.
Loopback only; bounded by --max-seconds. Prints one summary line; exits 1 on any loss, duplicate
or reordering, 124 when out of time.

    Scripts/crash-test --kafka [--cycles N] [--max-seconds S]
"""

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_kafka_clients as kit  # noqa: E402  (the daemon wrapper, ports, clients)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--max-seconds", type=int, default=300)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--verbose", action="store_true")
    options = parser.parse_args()
    random.seed(options.seed)
    kit.start_watchdog(options.max_seconds)
    server = kit.Ringlogd("--kafka-partitions", str(options.partitions))
    topic = "crash"
    acknowledged = {"ck": set(), "kp": set()}
    failures = {"ck": 0, "kp": 0}
    sent = {"ck": 0, "kp": 0}
    stop = threading.Event()
    lock = threading.Lock()

    def confluent():
        producer = kit.ck_producer(server.bootstrap, **{"acks": "all", "enable.idempotence": True, "message.timeout.ms": 120000,
                                                        "retry.backoff.ms": 50, "reconnect.backoff.max.ms": 200, "log_level": 2})

        def delivered(error, message, number=None):
            with lock:
                if error is None:
                    acknowledged["ck"].add(int(message.value().split()[1]))
                else:
                    failures["ck"] += 1

        number = 0
        while not stop.is_set():
            try:
                producer.produce(topic, value=f"ck {number}".encode(), key=b"ck", on_delivery=delivered)
                number += 1
                sent["ck"] = number
            except BufferError:
                producer.poll(0.05)
            producer.poll(0)
            if number % 200 == 0:
                time.sleep(0.01)
        producer.flush(120)

    def kafka_python():
        producer = kit.kp_producer(server.bootstrap, acks="all", enable_idempotence=True, retries=1_000_000, request_timeout_ms=5000,
                                   delivery_timeout_ms=120000, retry_backoff_ms=50, reconnect_backoff_max_ms=200, linger_ms=5)
        number = 0
        while not stop.is_set():
            future = producer.send(topic, key=b"kp", value=f"kp {number}".encode())

            def done(metadata, value=number):
                with lock:
                    acknowledged["kp"].add(value)

            def failed(error):
                with lock:
                    failures["kp"] += 1

            future.add_callback(done)
            future.add_errback(failed)
            number += 1
            sent["kp"] = number
            if number % 100 == 0:
                time.sleep(0.01)
        producer.flush(120)
        producer.close(timeout=30)

    kit.require_confluent()
    kit.require_kafka_python()
    duplicates = 0
    threads = [threading.Thread(target=confluent, daemon=True), threading.Thread(target=kafka_python, daemon=True)]
    for thread in threads:
        thread.start()
    try:
        for cycle in range(options.cycles):
            time.sleep(random.uniform(0.4, 1.5))
            with lock:
                progress = {who: len(numbers) for who, numbers in acknowledged.items()}
            if options.verbose:
                print(f"cycle {cycle + 1}: acknowledged so far {progress}, sent {dict(sent)}", flush=True)
            duplicates += server.counters().get("duplicateAppendsTotal", 0)
            server.kill9()
            server.start()
        time.sleep(1.0)
    finally:
        stop.set()
    for thread in threads:
        thread.join(150)
    # Every record in the log, per producer: (number, partition, offset).
    stored = {"ck": [], "kp": []}
    for partition in range(options.partitions):
        batches, _ = kit.fetch_batches(server.kafka_port, topic, partition, timeout=60)
        for batch in batches:
            for record in kit.DefaultRecordBatch(batch):
                offset, value = record.offset, record.value
                who, number = value.decode().split()
                stored[who].append((int(number), partition, offset))
    problems = []
    summary = []
    for who in ("ck", "kp"):
        numbers = [number for number, _, _ in stored[who]]
        counts = {}
        for number in numbers:
            counts[number] = counts.get(number, 0) + 1
        duplicated = sorted(number for number, count in counts.items() if count > 1)
        lost = sorted(acknowledged[who] - set(counts))
        # One key, so one partition: its records in the order they were numbered.
        ordered = [number for number, _, _ in sorted(stored[who], key=lambda entry: (entry[1], entry[2]))]
        reordered = sum(1 for earlier, later in zip(ordered, ordered[1:]) if later <= earlier)
        if lost:
            problems.append(f"{who}: {len(lost)} acknowledged records lost, e.g. {lost[:5]}")
        if duplicated:
            problems.append(f"{who}: {len(duplicated)} records stored twice, e.g. {duplicated[:5]}")
        if reordered:
            problems.append(f"{who}: {reordered} records out of order")
        summary.append(f"{who}: sent {sent[who]}, acknowledged {len(acknowledged[who])}, failed {failures[who]}, stored {len(numbers)}, "
                       f"lost {len(lost)}, duplicated {len(duplicated)}")
    duplicates += server.counters().get("duplicateAppendsTotal", 0)
    print(f"kafka crash test (seed {options.seed}): {options.cycles} kill -9 cycles; " + "; ".join(summary)
          + f"; retries answered as duplicates by the server: {duplicates}")
    server.cleanup(expect_clean_stop=True)
    for problem in problems:
        print("FAIL " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
