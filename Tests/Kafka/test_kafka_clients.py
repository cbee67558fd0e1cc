#!/usr/bin/env python3
"""Real Kafka clients against ringlogd's Kafka listener.

kcat (librdkafka from Debian), confluent-kafka (which carries its own librdkafka) and kafka-python
produce, consume, commit offsets, rebalance and manage topics against ringlogd processes that this
file starts itself: one per test class, on free loopback ports, each on a fresh data directory.
Scripts/kafka-test installs the clients and runs it; by hand:

    RINGLOGD=.build/debug/ringlogd VENV_PYTHON Tests/Kafka/test_kafka_clients.py [Class[.test] ...]

Environment:
    RINGLOGD                     the daemon (default .build/debug/ringlogd)
    RINGLOG                      the native CLI (default: ringlog beside RINGLOGD)
    RINGLOG_KAFKA_TEST_SECONDS   alarm per test (default 120)
    RINGLOG_KAFKA_TOTAL_SECONDS  limit for the whole run (default 600): past it a watchdog kills
                                 every ringlogd this file started and exits 124
    RINGLOG_KAFKA_KEEP=1         keep the data directories and server logs
    RINGLOG_KAFKA_VERBOSE=1      show the Python clients' own logging

Nothing can hang: client calls carry timeouts, subprocesses deadlines, each test an alarm, and the
watchdog bounds the run. Only 127.0.0.1 is used. The last line is "N passed, N failed, N skipped".
"""

import json
import logging
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RINGLOGD = os.path.abspath(os.environ.get("RINGLOGD") or os.path.join(REPO, ".build/debug/ringlogd"))
RINGLOG = os.path.abspath(os.environ.get("RINGLOG") or os.path.join(os.path.dirname(RINGLOGD), "ringlog"))
KCAT = shutil.which("kcat") or shutil.which("kafkacat")
TEST_SECONDS = float(os.environ.get("RINGLOG_KAFKA_TEST_SECONDS", "120"))
TOTAL_SECONDS = float(os.environ.get("RINGLOG_KAFKA_TOTAL_SECONDS", "600"))
KEEP = os.environ.get("RINGLOG_KAFKA_KEEP") == "1"
VERBOSE = os.environ.get("RINGLOG_KAFKA_VERBOSE") == "1"
HOST = "127.0.0.1"

try:
    import kafka
    import kafka.errors as kafka_errors
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.record.default_records import DefaultRecordBatch
    from kafka.structs import OffsetAndMetadata
except ImportError as error:  # reported by the tests that need it
    kafka = None
    KAFKA_PYTHON_MISSING = str(error)

try:
    import confluent_kafka as ck
except ImportError as error:
    ck = None
    CONFLUENT_MISSING = str(error)

# Kafka's codec numbers (the low three bits of a record batch's attributes).
CODECS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
INVALID_TOPIC_EXCEPTION = 17
UNSUPPORTED_VERSION = 35

# --------------------------------------------------------------------------------------------
# Bounding the run


class TestTimeout(Exception):
    pass


def _alarm(signum, frame):
    raise TestTimeout(f"the test ran past {TEST_SECONDS:.0f}s (RINGLOG_KAFKA_TEST_SECONDS)")


_live_processes = []
_live_directories = set()
_live_lock = threading.Lock()


def kill_all_servers():
    with _live_lock:
        processes = list(_live_processes)
    for process in processes:
        if process.poll() is None:
            try:
                process.kill()
            except OSError:
                pass


def start_watchdog(seconds):
    def expire():
        sys.stderr.write(f"\nTIMEOUT: the Kafka client tests ran past {seconds:.0f}s; killing ringlogd and exiting\n")
        kill_all_servers()
        if not KEEP:
            with _live_lock:
                directories = list(_live_directories)
            for directory in directories:
                shutil.rmtree(directory, ignore_errors=True)
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(124)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()


def close_quietly(close, timeout=15):
    """Calls `close` in a helper thread and waits at most `timeout`: a client that cannot reach
    the server to say goodbye must not hold the test up."""

    def run():
        try:
            close()
        except Exception:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)


def wait_until(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def now_ms():
    return int(time.time() * 1000)


# --------------------------------------------------------------------------------------------
# ringlogd


def free_ports(count):
    """`count` distinct ports that were free a moment ago (all held at once while picking)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind((HOST, 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def port_accepts(port, timeout=0.5):
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def listening_ports(pid):
    """The TCP ports process `pid` listens on (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                        ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


class Ringlogd:
    """One ringlogd on a temporary data directory. kafka: "listen" (--kafka-listen on a free
    port, the default), "off" (--kafka-listen off) or "default" (no --kafka-listen at all)."""

    def __init__(self, *options, kafka_port=None, kafka="listen"):
        self.options = list(options)
        self.kafka = kafka
        self.directory = tempfile.mkdtemp(prefix="ringlog-kafka-test-")
        with _live_lock:
            _live_directories.add(self.directory)
        self.data = os.path.join(self.directory, "data")
        self.log_path = os.path.join(self.directory, "ringlogd.log")
        native, spare = free_ports(2)
        self.port = native
        self.kafka_port = kafka_port or (9092 if kafka == "default" else spare)
        self.process = None
        self.starts = 0
        try:
            self.start()
        except BaseException:
            self.cleanup(expect_clean_stop=False)  # the log is in the exception already
            raise

    @property
    def bootstrap(self):
        return f"{HOST}:{self.kafka_port}"

    @property
    def native(self):
        return f"{HOST}:{self.port}"

    def command(self):
        command = [RINGLOGD, "--data-dir", self.data, "--listen", self.native]
        if self.kafka == "listen":
            command += ["--kafka-listen", self.bootstrap]
        elif self.kafka == "off":
            command += ["--kafka-listen", "off"]
        return command + self.options

    def start(self, timeout=30):
        if not os.access(RINGLOGD, os.X_OK):
            raise RuntimeError(f"no ringlogd at {RINGLOGD}: build it first, or set RINGLOGD")
        deadline = time.monotonic() + timeout
        while True:
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {self.starts}: {' '.join(self.command())}\n".encode())
                log.flush()
                self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            with _live_lock:
                _live_processes.append(self.process)
            if self._wait_ready(deadline):
                return
            # It exited. Right after a kill -9 the ports may still be held for a moment: retry then.
            if time.monotonic() >= deadline or "in use" not in self.log_tail(5).lower():
                raise RuntimeError(f"ringlogd did not start (exit code {self.process.returncode}):\n{self.log_tail()}")
            time.sleep(0.3)

    def _wait_ready(self, deadline):
        ports = [self.port] + ([self.kafka_port] if self.kafka != "off" else [])
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            # Ready means "listening" printed: ringlogd says it once SIGTERM is trapped, so a
            # stop right after is a graceful one (its ports accept a moment earlier).
            if self._said_listening() and all(port_accepts(port) for port in ports):
                return True
            time.sleep(0.05)
        raise RuntimeError(f"ringlogd did not accept connections on {ports} within the time allowed:\n{self.log_tail()}")

    def _said_listening(self):
        try:
            with open(self.log_path, "rb") as log:
                this_start = log.read().decode(errors="replace").rsplit("--- start ", 1)[-1]
        except OSError:
            return False
        return any(line.startswith("listening ") for line in this_start.splitlines())

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code (SIGKILL after `timeout`, then the code is negative)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
                return "still running after SIGTERM"
        return self.process.returncode

    def kill9(self):
        self.process.kill()
        self.process.wait(10)

    def cleanup(self, expect_clean_stop=True):
        was_running = self.alive()
        code = self.stop()
        if KEEP:
            print(f"  kept {self.directory}")
        else:
            shutil.rmtree(self.directory, ignore_errors=True)
            with _live_lock:
                _live_directories.discard(self.directory)
        if expect_clean_stop and was_running and code != 0:
            raise AssertionError(f"ringlogd did not stop cleanly on SIGTERM (exit {code}):\n{self.log_tail()}")

    def log_tail(self, lines=40):
        try:
            with open(self.log_path, "rb") as log:
                return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ringlog(self, *arguments, timeout=20):
        """The native CLI against this server: (exit code, stdout, stderr)."""
        result = subprocess.run([RINGLOG, *arguments, "--server", self.native], capture_output=True, text=True, timeout=timeout)
        return result.returncode, result.stdout, result.stderr

    def log_names(self):
        code, out, err = self.ringlog("list", "--json")
        if code != 0:
            raise AssertionError(f"ringlog list exited {code}: {err}")
        return {json.loads(line)["name"] for line in out.splitlines() if line.strip()}

    def counters(self):
        code, out, _ = self.ringlog("info", "--json")
        return json.loads(out) if code == 0 else {}


# --------------------------------------------------------------------------------------------
# The Kafka protocol by hand: requests framed here, responses read with Reader


API_PRODUCE, API_FETCH, API_LIST_OFFSETS, API_METADATA, API_VERSIONS = 0, 1, 2, 3, 18


def kafka_string(text):
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">h", len(data)) + data


def compact_string(text):
    data = text.encode()
    return bytes([len(data) + 1]) + data  # lengths below 127 fit one varint byte


def request_frame(api_key, version, correlation, body=b"", header_v2=False, client_id="ringlog-kafka-test"):
    header = struct.pack(">hhi", api_key, version, correlation) + kafka_string(client_id)
    if header_v2:
        header += b"\x00"  # no tagged fields
    return struct.pack(">i", len(header) + len(body)) + header + body


def recv_exact(sock, count):
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 16))
        if not chunk:
            return None
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def read_frame(sock):
    """The bytes of one frame after its size, or None when the peer closed."""
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">i", head)
    if size < 0:
        raise ValueError(f"a frame size of {size}")
    return recv_exact(sock, size) if size else b""


class Reader:
    def __init__(self, data, position=0):
        self.data = data
        self.position = position

    def take(self, count):
        if count < 0 or self.position + count > len(self.data):
            raise AssertionError(f"response cut short: {count} bytes wanted at {self.position} of {len(self.data)}")
        chunk = self.data[self.position:self.position + count]
        self.position += count
        return chunk

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def int8(self):
        return self.unpack(">b")

    def int16(self):
        return self.unpack(">h")

    def int32(self):
        return self.unpack(">i")

    def int64(self):
        return self.unpack(">q")

    def string(self):
        length = self.int16()
        return None if length < 0 else self.take(length).decode()

    def array(self, item):
        count = self.int32()
        return [] if count < 0 else [item() for _ in range(count)]


class KafkaWire:
    """A raw connection to the Kafka port."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.correlation = 1000

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, api_key, version, body=b"", header_v2=False):
        self.correlation += 1
        self.sock.sendall(request_frame(api_key, version, self.correlation, body, header_v2))
        return self.correlation

    def call(self, api_key, version, body=b"", header_v2=False):
        """Sends one request and returns a Reader over its response, after the correlation id
        (response header v0: every version used here is a non-flexible one, or ApiVersions)."""
        correlation = self.send(api_key, version, body, header_v2)
        frame = read_frame(self.sock)
        if frame is None:
            raise AssertionError(f"the server closed the connection instead of answering API {api_key} v{version}")
        reader = Reader(frame)
        answered = reader.int32()
        if answered != correlation:
            raise AssertionError(f"correlation id {answered} answers request {correlation}")
        return reader

    def closed_within(self, seconds):
        """True when the server closes (or resets) the connection within `seconds`, reading and
        dropping whatever it sends before that."""
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.sock.settimeout(remaining)
            try:
                if not self.sock.recv(65536):
                    return True
            except socket.timeout:
                return False
            except OSError:
                return True


def api_versions(port):
    """ApiVersions v0: {api_key: (min, max)}."""
    with KafkaWire(port) as wire:
        reader = wire.call(API_VERSIONS, 0)
        error = reader.int16()
        if error:
            raise AssertionError(f"ApiVersions v0 answered error {error}")
        return {key: (low, high) for key, low, high in reader.array(lambda: (reader.int16(), reader.int16(), reader.int16()))}


def metadata_v4(port, topics, allow_auto_creation=True):
    """Metadata v4 for `topics` (None: all topics): (brokers, controller_id, {name: (error, [partition...])})."""
    if topics is None:
        body = struct.pack(">i", -1)
    else:
        body = struct.pack(">i", len(topics)) + b"".join(kafka_string(topic) for topic in topics)
    body += struct.pack(">b", 1 if allow_auto_creation else 0)
    with KafkaWire(port) as wire:
        reader = wire.call(API_METADATA, 4, body)
    reader.int32()  # throttle time
    brokers = reader.array(lambda: (reader.int32(), reader.string(), reader.int32(), reader.string()))
    reader.string()  # cluster id
    controller = reader.int32()

    def partition():
        error, index, leader = reader.int16(), reader.int32(), reader.int32()
        reader.array(reader.int32)
        reader.array(reader.int32)
        return (index, error, leader)

    def topic():
        error, name = reader.int16(), reader.string()
        reader.int8()  # is internal
        return name, (error, reader.array(partition))

    return [(node, host, port) for node, host, port, _ in brokers], controller, dict(reader.array(topic))


def fetch_batches(port, topic, partition, timeout=20):
    """Every record batch of a partition, exactly as Fetch v4 returns it, from offset 0 to the
    high watermark: ([batch bytes...], high watermark)."""
    batches = []
    offset = 0
    deadline = time.monotonic() + timeout
    with KafkaWire(port) as wire:
        while time.monotonic() < deadline:
            body = (struct.pack(">iiiib", -1, 100, 1, 16 << 20, 0) + struct.pack(">i", 1) + kafka_string(topic)
                    + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 16 << 20))
            reader = wire.call(API_FETCH, 4, body)
            reader.int32()  # throttle time
            found = None
            for _ in range(reader.int32()):
                name = reader.string()
                for _ in range(reader.int32()):
                    index, error, high = reader.int32(), reader.int16(), reader.int64()
                    reader.int64()  # last stable offset
                    for _ in range(max(reader.int32(), 0)):  # aborted transactions
                        reader.int64()
                        reader.int64()
                    size = reader.int32()
                    records = reader.take(size) if size > 0 else b""
                    if name == topic and index == partition:
                        found = (error, high, records)
            if found is None:
                raise AssertionError(f"Fetch v4 answered without {topic}/{partition}")
            error, high, records = found
            if error:
                raise AssertionError(f"Fetch v4 of {topic}/{partition} at offset {offset}: error {error}")
            if offset >= high:
                return batches, high
            position, progressed = 0, False
            while len(records) - position >= 12:
                base, length = struct.unpack_from(">qi", records, position)
                end = position + 12 + length
                if end > len(records):
                    break
                batch = records[position:end]
                batches.append(batch)
                offset = base + struct.unpack_from(">i", batch, 23)[0] + 1
                position, progressed = end, True
            if not progressed and offset < high:
                raise AssertionError(f"Fetch v4 of {topic}/{partition} at {offset} (high watermark {high}) returned no whole batch")
    raise AssertionError(f"fetching {topic}/{partition} took more than {timeout}s")


def batch_codec(batch):
    """The compression codec in a fetched batch's attributes (bytes 21-22, big-endian)."""
    return struct.unpack_from(">h", batch, 21)[0] & 7


# --------------------------------------------------------------------------------------------
# A proxy that loses one Produce response


class _ProxiedConnection:
    def __init__(self, client, server):
        self.client = client
        self.server = server
        self.produce_correlations = set()
        self._closed = False
        self._lock = threading.Lock()

    def close(self, reset_client=False):
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if reset_client:
            # An abortive close: SO_LINGER 0 makes close() send RST. SHUT_RD first wakes the
            # thread blocked reading the client without sending the client anything.
            try:
                self.client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.client.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        else:
            try:
                self.client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.server.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for sock in (self.client, self.server):
            try:
                sock.close()
            except OSError:
                pass


class DropProduceResponseProxy:
    """Sits between Kafka clients and a broker and passes frames both ways untouched, except that
    while armed, the first Produce response is never delivered: the broker has handled the request
    (its response is already here), the client's connection is reset (RST) and the broker's side
    closed, so the client has to send the same batch again. Starts disarmed; arm() arms it for
    one drop. The broker must advertise this proxy's address, or clients would reconnect
    around it."""

    def __init__(self, upstream_port):
        self.upstream = (HOST, upstream_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((HOST, 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.armed = False
        self.dropped = threading.Event()
        self.produce_requests = 0
        self.connections = 0
        self.drops = 0
        self.open = set()
        self.closing = False
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()

    @property
    def address(self):
        return f"{HOST}:{self.port}"

    def arm(self):
        with self.lock:
            self.armed = True
            self.produce_requests = 0
            self.dropped.clear()

    def close(self):
        self.closing = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        self.listener.close()
        with self.lock:
            connections = list(self.open)
        for connection in connections:
            connection.close()

    def _accept(self):
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            for sock in (client, server):
                sock.settimeout(None)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _ProxiedConnection(client, server)
            with self.lock:
                self.connections += 1
                self.open.add(connection)
            threading.Thread(target=self._requests, args=(connection,), daemon=True).start()
            threading.Thread(target=self._responses, args=(connection,), daemon=True).start()

    def _finish(self, connection, reset_client=False):
        connection.close(reset_client)
        with self.lock:
            self.open.discard(connection)

    def _requests(self, connection):
        try:
            while True:
                body = read_frame(connection.client)
                if body is None:
                    break
                if len(body) >= 8:
                    api_key, _, correlation = struct.unpack_from(">hhi", body, 0)
                    if api_key == API_PRODUCE:
                        with self.lock:  # noted before the broker can answer it
                            connection.produce_correlations.add(correlation)
                            self.produce_requests += 1
                connection.server.sendall(struct.pack(">i", len(body)) + body)
        except (OSError, ValueError):
            pass
        self._finish(connection)

    def _responses(self, connection):
        try:
            while True:
                body = read_frame(connection.server)
                if body is None:
                    break
                correlation = struct.unpack_from(">i", body, 0)[0] if len(body) >= 4 else None
                with self.lock:
                    produce = correlation in connection.produce_correlations
                    connection.produce_correlations.discard(correlation)
                    drop = produce and self.armed
                    if drop:
                        self.armed = False
                        self.drops += 1
                if drop:
                    self._finish(connection, reset_client=True)
                    self.dropped.set()
                    return
                connection.client.sendall(struct.pack(">i", len(body)) + body)
        except (OSError, ValueError):
            pass
        self._finish(connection)


class FakeBroker:
    """For the proxy's own test: answers every request frame with its correlation id and API key,
    and counts the Produce requests it got."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((HOST, 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.produce_requests = 0
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        try:
            while True:
                body = read_frame(sock)
                if body is None:
                    return
                api_key, _, correlation = struct.unpack_from(">hhi", body, 0)
                if api_key == API_PRODUCE:
                    with self.lock:
                        self.produce_requests += 1
                answer = struct.pack(">ih", correlation, api_key) + b"answer" * (correlation % 7)
                sock.sendall(struct.pack(">i", len(answer)) + answer)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()


# --------------------------------------------------------------------------------------------
# Clients


def _known(client_class, settings):
    return {key: value for key, value in settings.items() if key in client_class.DEFAULT_CONFIG}


def kp_supports_idempotence():
    return kafka is not None and "enable_idempotence" in KafkaProducer.DEFAULT_CONFIG


def kp_producer(bootstrap, **config):
    settings = dict(bootstrap_servers=bootstrap, request_timeout_ms=10000, max_block_ms=20000, linger_ms=5,
                    retry_backoff_ms=100, reconnect_backoff_max_ms=1000, bootstrap_timeout_ms=20000,
                    delivery_timeout_ms=30000)
    if kp_supports_idempotence():
        settings["enable_idempotence"] = False  # kafka-python 2.1+ turns it on by default
    settings.update(config)
    if settings.get("enable_idempotence") and not kp_supports_idempotence():
        raise unittest.SkipTest(f"kafka-python {kafka.__version__} has no idempotent producer")
    return KafkaProducer(**_known(KafkaProducer, settings))


def kp_consumer(bootstrap, **config):
    settings = dict(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest",
                    fetch_max_wait_ms=100, request_timeout_ms=15000, session_timeout_ms=10000, heartbeat_interval_ms=500,
                    max_poll_interval_ms=20000, retry_backoff_ms=100, reconnect_backoff_max_ms=1000,
                    bootstrap_timeout_ms=20000)
    settings.update(config)
    return KafkaConsumer(**_known(KafkaConsumer, settings))


def kp_admin(bootstrap):
    settings = dict(bootstrap_servers=bootstrap, request_timeout_ms=15000, retry_backoff_ms=100,
                    reconnect_backoff_max_ms=1000, bootstrap_timeout_ms=20000)
    return KafkaAdminClient(**_known(KafkaAdminClient, settings))


def ck_producer(bootstrap, **config):
    settings = {"bootstrap.servers": bootstrap, "linger.ms": 5, "message.timeout.ms": 30000,
                "socket.timeout.ms": 10000, "log.connection.close": False}
    settings.update(config)
    return ck.Producer(settings)


def ck_consumer(bootstrap, group, **config):
    settings = {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                "auto.offset.reset": "earliest", "enable.partition.eof": False, "fetch.wait.max.ms": 100,
                "session.timeout.ms": 10000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 20000,
                "socket.timeout.ms": 10000, "log.connection.close": False}
    settings.update(config)
    return ck.Consumer(settings)


def kp_send(producer, topic, values, partition=None, keys=None, headers=None, timeout=30):
    """Sends and waits for every acknowledgement; returns the offsets (-1 for acks=0)."""
    futures = [producer.send(topic, value=value, key=keys[index] if keys else None, partition=partition, headers=headers)
               for index, value in enumerate(values)]
    producer.flush(timeout=timeout)
    return [future.get(timeout=timeout).offset for future in futures]


def ck_send(producer, topic, values, partition=None, keys=None, headers=None, timeout=30):
    """Produces and flushes; fails on any delivery error; returns the delivered offsets."""
    reports = [None] * len(values)

    def reporter(index):
        def report(error, message):
            reports[index] = (error, message.offset() if error is None else None)
        return report

    for index, value in enumerate(values):
        extra = {}
        if partition is not None:
            extra["partition"] = partition
        if keys:
            extra["key"] = keys[index]
        if headers:
            extra["headers"] = headers
        while True:
            try:
                producer.produce(topic, value=value, on_delivery=reporter(index), **extra)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(timeout)
    if remaining:
        raise AssertionError(f"{remaining} of {len(values)} messages to {topic} were still undelivered after {timeout}s")
    failures = [(index, report) for index, report in enumerate(reports) if report is None or report[0] is not None]
    if failures:
        raise AssertionError(f"delivery to {topic} failed: {failures[:3]}")
    return [report[1] for report in reports]


def _kp_row(record):
    return (record.offset, record.key, record.value, [tuple(header) for header in (record.headers or [])])


def _ck_row(message):
    return (message.offset(), message.key(), message.value(), [tuple(header) for header in (message.headers() or [])])


def kp_read(bootstrap, topic_partitions, expected, timeout=30):
    """Reads `topic_partitions` from their starts with kafka-python (no group) until `expected`
    records came or `timeout` passed: ({(topic, partition): [(offset, key, value, headers)]},
    {(topic, partition): end offset})."""
    consumer = kp_consumer(bootstrap)
    try:
        partitions = [TopicPartition(topic, partition) for topic, partition in topic_partitions]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        rows = {tp: [] for tp in partitions}
        deadline = time.monotonic() + timeout
        while sum(map(len, rows.values())) < expected and time.monotonic() < deadline:
            for tp, records in consumer.poll(timeout_ms=200).items():
                rows[tp].extend(_kp_row(record) for record in records)
        ends = consumer.end_offsets(partitions)
        return ({(tp.topic, tp.partition): rows[tp] for tp in partitions},
                {(tp.topic, tp.partition): ends[tp] for tp in partitions})
    finally:
        close_quietly(consumer.close)


def ck_read(bootstrap, topic_partitions, expected, timeout=30):
    """kp_read with confluent-kafka (assigned partitions; the group id is unused but required)."""
    consumer = ck_consumer(bootstrap, unique("reader"))
    try:
        consumer.assign([ck.TopicPartition(topic, partition, ck.OFFSET_BEGINNING) for topic, partition in topic_partitions])
        rows = {tp: [] for tp in topic_partitions}
        deadline = time.monotonic() + timeout
        while sum(map(len, rows.values())) < expected and time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                raise AssertionError(f"confluent-kafka consumer error: {message.error()}")
            rows[(message.topic(), message.partition())].append(_ck_row(message))
        ends = {tp: consumer.get_watermark_offsets(ck.TopicPartition(*tp), timeout=10, cached=False)[1] for tp in topic_partitions}
        return rows, ends
    finally:
        close_quietly(consumer.close)


# --------------------------------------------------------------------------------------------
# Test base


def require_kafka_python():
    if kafka is None:
        raise unittest.SkipTest(f"kafka-python is not installed ({KAFKA_PYTHON_MISSING}); Scripts/kafka-test installs it")


def require_confluent():
    if ck is None:
        raise unittest.SkipTest(f"confluent-kafka is not installed ({CONFLUENT_MISSING}); Scripts/kafka-test installs it")


def require_kcat():
    if KCAT is None:
        raise unittest.SkipTest("kcat is not installed (apt-get install kcat); Scripts/kafka-test installs it")


class ServerTestCase(unittest.TestCase):
    """One ringlogd for the class, started with `server_options`."""

    server_options = ()
    server = None

    @classmethod
    def setUpClass(cls):
        require_kafka_python()
        cls.server = Ringlogd(*cls.server_options)

    @classmethod
    def tearDownClass(cls):
        if cls.server is not None:
            server, cls.server = cls.server, None
            server.cleanup()

    def setUp(self):
        self.summary = ""
        signal.setitimer(signal.ITIMER_REAL, TEST_SECONDS)

    def tearDown(self):
        signal.setitimer(signal.ITIMER_REAL, 0)
        if self.server is not None and not self.server.alive():
            self.fail(f"ringlogd exited (code {self.server.process.returncode}) during the test:\n{self.server.log_tail()}")

    @property
    def bootstrap(self):
        return self.server.bootstrap

    def note(self, text):
        self.summary = text

    def assertRows(self, rows, ends, expected, first_offset=0, what=""):
        """`expected`: {(topic, partition): [value...]}: consumed exactly those values, in order, at
        consecutive offsets from `first_offset`, and the partition ends right after them."""
        for tp, values in expected.items():
            got = rows.get(tp, [])
            self.assertEqual([row[2] for row in got], values, f"{what} {tp}: the values consumed")
            self.assertEqual([row[0] for row in got], list(range(first_offset, first_offset + len(values))), f"{what} {tp}: offsets")
            self.assertEqual(ends[tp], first_offset + len(values),
                             f"{what} {tp}: end offset (high watermark); more records stored than were sent?")


# --------------------------------------------------------------------------------------------
# The proxy alone (needs no ringlogd)


class ProxySelfTest(unittest.TestCase):
    """DropProduceResponseProxy against FakeBroker: the tool the idempotence tests rely on."""

    def setUp(self):
        self.summary = ""
        signal.setitimer(signal.ITIMER_REAL, 60)
        self.broker = FakeBroker()
        self.proxy = DropProduceResponseProxy(self.broker.port)
        self.addCleanup(self.broker.close)
        self.addCleanup(self.proxy.close)
        self.proxy.arm()

    def tearDown(self):
        signal.setitimer(signal.ITIMER_REAL, 0)

    def connect(self):
        return socket.create_connection((HOST, self.proxy.port), timeout=5)

    def answer(self, sock):
        body = read_frame(sock)
        self.assertIsNotNone(body, "the proxy closed the connection")
        return struct.unpack_from(">ih", body, 0)

    def assertReset(self, sock):
        try:
            data = sock.recv(100)
        except ConnectionResetError:
            return "reset"
        self.assertEqual(data, b"", "the client still got bytes after the dropped Produce response")
        return "closed"

    def test_drops_first_produce_response_once(self):
        with self.connect() as first:
            first.sendall(request_frame(API_METADATA, 4, 1) + request_frame(API_PRODUCE, 7, 2, b"batch"))
            self.assertEqual(self.answer(first), (1, API_METADATA))
            how = self.assertReset(first)
        self.assertTrue(self.proxy.dropped.wait(5))
        self.assertEqual(self.broker.produce_requests, 1, "the broker must have had the Produce request")
        with self.connect() as second:  # disarmed: everything passes
            second.sendall(request_frame(API_PRODUCE, 7, 3, b"batch"))
            self.assertEqual(self.answer(second), (3, API_PRODUCE))
            keys = [random.choice([API_PRODUCE, API_FETCH, API_METADATA]) for _ in range(50)]
            second.sendall(b"".join(request_frame(key, 4, 100 + index, os.urandom(index * 37)) for index, key in enumerate(keys)))
            self.assertEqual([self.answer(second)[0] for _ in range(50)], [100 + index for index in range(50)])
        self.proxy.arm()
        with self.connect() as third:
            third.sendall(request_frame(API_PRODUCE, 7, 9, b"batch"))
            self.assertReset(third)
        self.assertEqual(self.broker.produce_requests, 3 + keys.count(API_PRODUCE))
        self.assertEqual(self.proxy.drops, 2)
        self.summary = f"first Produce response dropped and the client {how}; later frames passed in order; re-armed drop worked"


# --------------------------------------------------------------------------------------------
# a. kcat


class KcatTests(ServerTestCase):
    server_options = ("--kafka-partitions", "2")

    @classmethod
    def setUpClass(cls):
        require_kcat()
        super().setUpClass()

    def kcat(self, *arguments, stdin=None, timeout=30):
        command = [KCAT, "-b", self.bootstrap, *arguments]
        result = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            self.fail(f"{' '.join(command)} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result

    def produce_lines(self, topic, partition, lines, *extra):
        self.kcat("-P", "-t", topic, "-p", str(partition), *extra, stdin="".join(line + "\n" for line in lines))

    def consume(self, topic, offset):
        """kcat -C from `offset` to the end: {partition: [(offset, key, value, headers, timestamp)]}."""
        result = self.kcat("-C", "-t", topic, "-o", offset, "-e", "-q", "-f", "%p %o %k %s %h %T\n")
        rows = {}
        for line in result.stdout.splitlines():
            partition, message_offset, key, value, headers, timestamp = line.split(" ")
            rows.setdefault(int(partition), []).append((int(message_offset), key, value, headers, int(timestamp)))
        return rows

    def test_produce_list_and_consume_with_offsets(self):
        topic = "kcat-basic"
        before = now_ms() - 1000
        counts = {0: 15, 1: 12}
        for partition, count in counts.items():
            self.produce_lines(topic, partition, [f"k{index}:v{partition}-{index}" for index in range(count)],
                               "-K:", "-H", "h=v", "-H", "trace=kcat")
        after = now_ms() + 1000
        listing = self.kcat("-L", "-m", "10").stdout
        self.assertIn(f'topic "{topic}" with 2 partitions', listing, listing)
        self.assertRegex(listing, rf"broker 0 at 127\.0\.0\.1:{self.server.kafka_port}\b")

        def expected(partition, first):
            return [(index, f"k{index}", f"v{partition}-{index}", "h=v,trace=kcat") for index in range(first, counts[partition])]

        everything = self.consume(topic, "beginning")
        for partition in counts:
            rows = everything.get(partition, [])
            self.assertEqual([row[:4] for row in rows], expected(partition, 0), f"partition {partition} from the beginning")
            for row in rows:
                self.assertTrue(before <= row[4] <= after, f"timestamp {row[4]} is outside [{before}, {after}]")
        last = self.consume(topic, "-10")
        for partition in counts:
            self.assertEqual([row[:4] for row in last.get(partition, [])], expected(partition, counts[partition] - 10),
                             f"partition {partition}, -o -10")
        self.assertEqual(self.consume(topic, "end"), {}, "-o end -e printed records")
        self.note("-L shows 2 partitions led by broker 0; 15+12 keyed records with 2 headers back in order; -o -10 and -o end right")

    def test_start_at_timestamp(self):
        topic = "kcat-time"
        for partition in (0, 1):
            self.produce_lines(topic, partition, [f"early-{partition}-{index}" for index in range(3)])
        time.sleep(0.05)
        start = now_ms()
        for partition in (0, 1):
            self.produce_lines(topic, partition, [f"late-{partition}-{index}" for index in range(4)])
        rows = self.consume(topic, f"s@{start}")
        for partition in (0, 1):
            got = [(row[0], row[2]) for row in rows.get(partition, [])]
            self.assertEqual(got, [(3 + index, f"late-{partition}-{index}") for index in range(4)], f"partition {partition} from s@{start}")
        self.note("-o s@<ms> starts each partition at the first record appended at or after that time")


# --------------------------------------------------------------------------------------------
# b and c. Producers: acks and compression


class ProducerTests(ServerTestCase):
    VALUES = 50

    def test_kafka_python_acks(self):
        results = []
        for acks in (0, 1, "all"):
            topic = f"acks-kp-{acks}"
            values = [f"kp-{acks}-{index}".encode() for index in range(self.VALUES)]
            producer = kp_producer(self.bootstrap, acks=acks)
            try:
                offsets = kp_send(producer, topic, values)
            finally:
                close_quietly(lambda: producer.close(timeout=10))
            if acks != 0:
                self.assertEqual(offsets, list(range(self.VALUES)), f"acks={acks}: acknowledged offsets")
            rows, ends = ck_read(self.bootstrap, [(topic, 0)], self.VALUES, timeout=20) if ck else kp_read(self.bootstrap, [(topic, 0)], self.VALUES)
            self.assertRows(rows, ends, {(topic, 0): values}, what=f"kafka-python acks={acks}")
            results.append(str(acks))
        self.note(f"acks {', '.join(results)}: {self.VALUES} records each acknowledged and consumed once, in order (read back with confluent-kafka)")

    def test_confluent_acks(self):
        require_confluent()
        for acks in ("0", "1", "all"):
            topic = f"acks-ck-{acks}"
            values = [f"ck-{acks}-{index}".encode() for index in range(self.VALUES)]
            producer = ck_producer(self.bootstrap, acks=acks)
            offsets = ck_send(producer, topic, values)
            if acks != "0":
                self.assertEqual(offsets, list(range(self.VALUES)), f"acks={acks}: delivered offsets")
            rows, ends = kp_read(self.bootstrap, [(topic, 0)], self.VALUES, timeout=20)
            self.assertRows(rows, ends, {(topic, 0): values}, what=f"confluent-kafka acks={acks}")
        self.note(f"acks 0, 1, all: {self.VALUES} records each delivered and consumed once, in order (read back with kafka-python)")

    def test_compression_passes_through(self):
        clients = ["kafka-python"] + (["confluent-kafka"] if ck else []) + (["kcat"] if KCAT else [])
        sent = {}
        for client in clients:
            for codec in CODECS:
                topic = f"comp-{client}-{codec}"
                # Compressible even one record per batch: clients send a batch uncompressed when
                # compressing does not make it smaller.
                values = [f"{client}-{codec}-{index:04d}-".encode() + b"x" * 300 for index in range(200)]
                if client == "kafka-python":
                    producer = kp_producer(self.bootstrap, compression_type=codec, linger_ms=20)
                    try:
                        kp_send(producer, topic, values)
                    finally:
                        close_quietly(lambda: producer.close(timeout=10))
                elif client == "confluent-kafka":
                    ck_send(ck_producer(self.bootstrap, **{"compression.type": codec, "linger.ms": 20}), topic, values)
                else:
                    result = subprocess.run([KCAT, "-b", self.bootstrap, "-P", "-t", topic, "-z", codec],
                                            input=b"".join(value + b"\n" for value in values), capture_output=True, timeout=30)
                    self.assertEqual(result.returncode, 0, f"kcat -P -z {codec}: {result.stderr.decode(errors='replace')[-2000:]}")
                sent[(topic, 0)] = (CODECS[codec], values)
        batch_counts = []
        for (topic, partition), (codec, values) in sent.items():
            batches, high = fetch_batches(self.server.kafka_port, topic, partition)
            self.assertEqual(high, len(values), f"{topic}: high watermark")
            self.assertEqual(sorted({batch_codec(batch) for batch in batches}), [codec], f"{topic}: codec bits of the stored batches")
            decoded = []
            for batch in batches:
                parsed = DefaultRecordBatch(batch)
                self.assertTrue(parsed.validate_crc(), f"{topic}: the producer's CRC no longer matches")
                self.assertEqual(parsed.compression_type, codec)
                decoded.extend((record.offset, record.value) for record in parsed)
            self.assertEqual(decoded, list(enumerate(values)), f"{topic}: records in the fetched batches")
            batch_counts.append(len(batches))
        total = sum(len(values) for _, values in sent.values())
        rows, ends = kp_read(self.bootstrap, list(sent), total)
        self.assertRows(rows, ends, {tp: values for tp, (_, values) in sent.items()}, what="kafka-python consumer")
        if ck:
            rows, ends = ck_read(self.bootstrap, list(sent), total)
            self.assertRows(rows, ends, {tp: values for tp, (_, values) in sent.items()}, what="confluent-kafka consumer")
        self.note(f"{'/'.join(CODECS)} from {', '.join(clients)}: every stored batch keeps its codec and CRC "
                  f"({sum(batch_counts)} batches), records consumed intact")


# --------------------------------------------------------------------------------------------
# d. Idempotent producers whose first Produce response is lost


class IdempotenceTests(ServerTestCase):
    COUNT = 30

    @classmethod
    def setUpClass(cls):
        require_kafka_python()
        kafka_port = free_ports(1)[0]
        cls.proxy = DropProduceResponseProxy(kafka_port)
        try:
            cls.server = Ringlogd("--kafka-advertise", cls.proxy.address, kafka_port=kafka_port)
        except Exception:
            cls.proxy.close()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            super().tearDownClass()
        finally:
            cls.proxy.close()

    @property
    def bootstrap(self):
        return self.proxy.address

    def values(self, topic):
        return [f"{topic}-{index}".encode() for index in range(self.COUNT)], [f"{topic}-after-{index}".encode() for index in range(self.COUNT)]

    def check_drop(self):
        self.assertTrue(self.proxy.dropped.is_set(), "no Produce response was dropped")
        self.assertGreaterEqual(self.proxy.produce_requests, 2, "the producer did not send again after the reset")
        self.retried = self.proxy.produce_requests

    def check(self, topic, values, client):
        rows, ends = kp_read(self.bootstrap, [(topic, 0)], len(values), timeout=20)
        self.assertRows(rows, ends, {(topic, 0): values}, what=f"{client} idempotent")
        duplicates = self.server.counters().get("duplicateAppendsTotal", "?")
        self.note(f"{self.COUNT} records stored once after a lost Produce response and a reset connection "
                  f"({self.retried} Produce requests), then {self.COUNT} more in sequence; server duplicateAppendsTotal {duplicates}")

    def test_confluent_retry_is_not_stored_twice(self):
        require_confluent()
        topic = "idem-ck"
        first, then = self.values(topic)
        self.proxy.arm()
        producer = ck_producer(self.bootstrap, **{"enable.idempotence": True, "acks": "all"})
        ck_send(producer, topic, first, timeout=40)
        self.check_drop()
        ck_send(producer, topic, then, timeout=40)  # the sequence goes on after the deduplicated retry
        self.check(topic, first + then, "confluent-kafka")

    def test_kafka_python_retry_is_not_stored_twice(self):
        if not kp_supports_idempotence():
            self.skipTest(f"kafka-python {kafka.__version__} has no enable_idempotence")
        topic = "idem-kp"
        first, then = self.values(topic)
        self.proxy.arm()
        producer = kp_producer(self.bootstrap, enable_idempotence=True, acks="all")
        try:
            kp_send(producer, topic, first, timeout=40)
            self.check_drop()
            kp_send(producer, topic, then, timeout=40)
        finally:
            close_quietly(lambda: producer.close(timeout=10))
        self.check(topic, first + then, "kafka-python")


# --------------------------------------------------------------------------------------------
# e. Committed offsets across kill -9


class CrashRecoveryTests(ServerTestCase):
    def test_committed_offsets_survive_kill_9(self):
        topic = "resume"
        values = [f"resume-{index}".encode() for index in range(100)]
        producer = kp_producer(self.bootstrap, acks="all")
        try:
            kp_send(producer, topic, values)
        finally:
            close_quietly(lambda: producer.close(timeout=10))
        tp = TopicPartition(topic, 0)

        # kafka-python, group g: read 40, commit 40.
        consumer = kp_consumer(self.bootstrap, group_id="g")
        try:
            consumer.subscribe([topic])
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 40 and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200, max_records=40 - len(got)).values():
                    got.extend(_kp_row(record) for record in records)
            self.assertEqual([row[0] for row in got], list(range(40)), "kafka-python group g: first 40 offsets")
            consumer.commit(offsets={tp: OffsetAndMetadata(40, "", -1)})
            self.assertEqual(consumer.committed(tp), 40)
        finally:
            close_quietly(lambda: consumer.close(autocommit=False))

        # confluent-kafka, group g-ck: read 55, commit 55.
        if ck:
            consumer = ck_consumer(self.bootstrap, "g-ck")
            try:
                consumer.subscribe([topic])
                got = []
                deadline = time.monotonic() + 30
                while len(got) < 55 and time.monotonic() < deadline:
                    message = consumer.poll(0.2)
                    if message is not None and not message.error():
                        got.append(message.offset())
                self.assertEqual(got, list(range(55)), "confluent-kafka group g-ck: first 55 offsets")
                committed = consumer.commit(offsets=[ck.TopicPartition(topic, 0, 55)], asynchronous=False)
                self.assertTrue(all(part.error is None for part in committed), committed)
            finally:
                close_quietly(consumer.close)

        self.server.kill9()
        self.server.start()

        consumer = kp_consumer(self.bootstrap, group_id="g")
        try:
            self.assertEqual(consumer.committed(tp), 40, "group g's committed offset after kill -9")
            consumer.subscribe([topic])
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 60 and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    got.extend(_kp_row(record) for record in records)
            self.assertEqual([(row[0], row[2]) for row in got], list(enumerate(values))[40:], "kafka-python group g after kill -9")
        finally:
            close_quietly(lambda: consumer.close(autocommit=False))
        summary = "group g resumed at 40 after kill -9 (kafka-python)"

        if ck:
            consumer = ck_consumer(self.bootstrap, "g-ck")
            try:
                committed = consumer.committed([ck.TopicPartition(topic, 0)], timeout=10)
                self.assertEqual(committed[0].offset, 55, "group g-ck's committed offset after kill -9")
                consumer.subscribe([topic])
                got = []
                deadline = time.monotonic() + 30
                while len(got) < 45 and time.monotonic() < deadline:
                    message = consumer.poll(0.2)
                    if message is not None and not message.error():
                        got.append((message.offset(), message.value()))
                self.assertEqual(got, list(enumerate(values))[55:], "confluent-kafka group g-ck after kill -9")
            finally:
                close_quietly(consumer.close)
            summary += ", g-ck at 55 (confluent-kafka)"
        self.note(summary + "; all 100 acks=all records survived")


# --------------------------------------------------------------------------------------------
# f. Two consumers in one group


class _Member(threading.Thread):
    """One group member polling in its own thread; `assignment` is its current set of partitions."""

    def __init__(self, bootstrap, group, topic):
        super().__init__(daemon=True)
        self.bootstrap, self.group, self.topic = bootstrap, group, topic
        self.assignment = frozenset()
        self.error = None
        self.leave = threading.Event()

    def run(self):
        consumer = None
        try:
            consumer = self.open()
            while not self.leave.is_set():
                self.assignment = self.poll(consumer)
        except Exception as error:
            self.error = error
        finally:
            if consumer is not None:
                close_quietly(consumer.close, 20)  # LeaveGroup

    def stop(self, timeout=25):
        self.leave.set()
        self.join(timeout)


class _KafkaPythonMember(_Member):
    def open(self):
        consumer = kp_consumer(self.bootstrap, group_id=self.group, heartbeat_interval_ms=300)
        consumer.subscribe([self.topic])
        return consumer

    def poll(self, consumer):
        consumer.poll(timeout_ms=100)
        return frozenset(tp.partition for tp in consumer.assignment())


class _ConfluentMember(_Member):
    def open(self):
        consumer = ck_consumer(self.bootstrap, self.group, **{"heartbeat.interval.ms": 300})
        consumer.subscribe([self.topic])
        return consumer

    def poll(self, consumer):
        consumer.poll(0.1)
        return frozenset(tp.partition for tp in consumer.assignment())


class GroupTests(ServerTestCase):
    server_options = ("--kafka-partitions", "4")
    ALL = frozenset(range(4))
    SESSION_SECONDS = 10  # the consumers' session timeout (kp_consumer, ck_consumer)

    def split_and_leave(self, member_class, label):
        topic, group = f"split-{label}", f"split-group-{label}"
        producer = kp_producer(self.bootstrap)
        try:
            for partition in range(4):
                kp_send(producer, topic, [f"p{partition}".encode()], partition=partition)
        finally:
            close_quietly(lambda: producer.close(timeout=10))
        first = member_class(self.bootstrap, group, topic)
        second = member_class(self.bootstrap, group, topic)
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        first.start()
        self.assertTrue(wait_until(lambda: first.assignment == self.ALL or first.error, 30) and not first.error,
                        f"the first member never got all 4 partitions (has {sorted(first.assignment)}; error {first.error!r})")
        started = time.monotonic()
        second.start()
        split = wait_until(lambda: len(first.assignment) == 2 and len(second.assignment) == 2
                           and first.assignment | second.assignment == self.ALL, 30)
        self.assertTrue(split, f"no 2+2 split: {sorted(first.assignment)} and {sorted(second.assignment)} "
                               f"(errors {first.error!r}, {second.error!r})")
        split_seconds = time.monotonic() - started
        second.stop()
        self.assertFalse(second.is_alive(), "the second member did not close")
        left = time.monotonic()
        # Faster than the session timeout: only a LeaveGroup gets the partitions back this soon.
        regained = wait_until(lambda: first.assignment == self.ALL, self.SESSION_SECONDS - 2)
        self.assertTrue(regained, f"the remaining member has {sorted(first.assignment)} {self.SESSION_SECONDS - 2}s after "
                                  f"the other left (error {first.error!r})")
        self.note(f"2+2 split {split_seconds:.1f}s after the second joined; all 4 back {time.monotonic() - left:.1f}s after it left")

    def test_kafka_python_members_split_and_leave(self):
        self.split_and_leave(_KafkaPythonMember, "kp")

    def test_confluent_members_split_and_leave(self):
        require_confluent()
        self.split_and_leave(_ConfluentMember, "ck")


# --------------------------------------------------------------------------------------------
# g. Admin


def new_topics(name, partitions):
    """create_topics' argument for one topic: kafka-python 3 takes a dict (NewTopic is deprecated)."""
    if int(kafka.__version__.split(".")[0]) >= 3:
        return {name: {"num_partitions": partitions, "replication_factor": 1}}
    return [NewTopic(name, num_partitions=partitions, replication_factor=1)]


def topic_errors(result):
    """{name: error code} from a kafka-python create/delete topics result."""
    if isinstance(result, dict):
        items = result.get("topics") or result.get("topic_errors") or result.get("responses") or []
        return {item.get("name", item.get("topic")): item.get("error_code", 0) for item in items}
    topics = getattr(result, "topics", None) or getattr(result, "topic_errors", None) or []
    return {getattr(item, "name", None) or item[0]: getattr(item, "error_code", None) if hasattr(item, "error_code") else item[1]
            for item in topics}


class AdminTests(ServerTestCase):
    def admin(self):
        admin = kp_admin(self.bootstrap)
        self.addCleanup(close_quietly, admin.close)
        return admin

    def create(self, admin, name, partitions):
        """CreateTopics for one topic: its error code (0 when created)."""
        try:
            result = admin.create_topics(new_topics(name, partitions), timeout_ms=10000, raise_errors=False)
        except kafka_errors.InvalidTopicError:
            return INVALID_TOPIC_EXCEPTION
        return topic_errors(result).get(name, 0)

    def test_create_list_delete(self):
        admin = self.admin()
        self.assertEqual(self.create(admin, "adm", 3), 0, "CreateTopics adm")
        self.assertIn("adm", admin.list_topics())
        described = {topic.get("name", topic.get("topic")): topic for topic in admin.describe_topics(["adm"])}
        partitions = sorted(partition.get("partition_index", partition.get("partition")) for partition in described["adm"]["partitions"])
        self.assertEqual(partitions, [0, 1, 2])
        logs = self.server.log_names()
        self.assertTrue({"adm.0", "adm.1", "adm.2"} <= logs and "adm.3" not in logs, f"RingLog logs: {sorted(logs)}")
        result = admin.delete_topics(["adm"], timeout_ms=10000)
        self.assertEqual(topic_errors(result).get("adm", 0), 0, f"DeleteTopics: {result}")
        self.assertTrue(wait_until(lambda: "adm" not in admin.list_topics(), 10), "adm still listed after DeleteTopics")
        logs = self.server.log_names()
        self.assertFalse([name for name in logs if name.startswith("adm.")], f"logs left after DeleteTopics: {sorted(logs)}")
        self.note("CreateTopics (3 partitions) -> listed with 3 partitions and logs adm.0-adm.2; DeleteTopics removed topic and logs")

    def test_topic_names_kafka_allows_and_refuses(self):
        admin = self.admin()
        bad = {"a" * 250: "250 characters", "bad/name": "a '/'", "..": "'..'", "sp ace": "a space"}
        for name, why in bad.items():
            self.assertEqual(self.create(admin, name, 1), INVALID_TOPIC_EXCEPTION, f"CreateTopics of a topic name with {why}")
        # Names a log cannot carry are served under a hashed log name labelled with the topic.
        odd = ["_x", ".hidden", "-dash", "__consumer_offsets_like", "o" * 249, "c" * 123 + "x"]
        for name in odd:
            self.assertEqual(self.create(admin, name, 2), 0, f"CreateTopics of {name[:20]}... ({len(name)} bytes)")
        plain = "c" * 123  # "c...c.1023" is exactly 128 bytes: a plain log name
        self.assertEqual(self.create(admin, plain, 1), 0)
        logs = self.server.log_names()
        self.assertIn(plain + ".0", logs)
        self.assertFalse([log for log in logs if log.startswith(("_", ".", "-", "o" * 100))], "odd names never become log names")
        _, _, everything = metadata_v4(self.server.kafka_port, None)
        for name in odd:
            self.assertIn(name, everything, f"listed under its own name: {name[:20]}...")
            self.assertEqual(len(everything[name][1]), 2, f"{name[:20]}...: 2 partitions")
        # Records go through a labelled topic like any other.
        producer = kp_producer(self.bootstrap, acks="all")
        try:
            kp_send(producer, "_x", [b"under", b"score"], partition=1)
        finally:
            close_quietly(lambda: producer.close(timeout=5))
        rows, _ = kp_read(self.bootstrap, [("_x", 1)], 2)
        self.assertEqual([value for _, _, value, _ in rows[("_x", 1)]], [b"under", b"score"], "records of topic _x")
        _, high = fetch_batches(self.server.kafka_port, "_x", 1)
        self.assertEqual(high, 2)
        self.note("250 characters, '/', '..' and a space refused with INVALID_TOPIC_EXCEPTION; '_x', '.hidden', '-dash', "
                  "249 and 124 characters served under hashed, labelled log names (listed by their own names, records round-trip); "
                  "123 characters: a plain log name")

    def test_metadata_names_the_broker_and_refuses_bad_names(self):
        brokers, controller, topics = metadata_v4(self.server.kafka_port, ["meta-ok", "bad/y"])
        self.assertEqual(brokers, [(0, HOST, self.server.kafka_port)], "the one broker: node 0 at the listen address")
        self.assertEqual(controller, 0, "controller id (kafka-python's admin client sends CreateTopics to it)")
        self.assertEqual(topics["bad/y"][0], INVALID_TOPIC_EXCEPTION, "Metadata auto-creation of 'bad/y'")
        error, partitions = topics["meta-ok"]
        self.assertEqual(error, 0, "Metadata auto-creation of meta-ok")
        self.assertEqual([(index, code, leader) for index, code, leader in partitions], [(0, 0, 0)])
        _, _, everything = metadata_v4(self.server.kafka_port, None)
        self.assertIn("meta-ok", everything)
        self.assertNotIn("bad/y", everything)
        # Not part of the contract, reported only: does allow_auto_topic_creation=false create?
        _, _, unasked = metadata_v4(self.server.kafka_port, ["meta-unasked"], allow_auto_creation=False)
        created = "meta-unasked.0" in self.server.log_names()
        self.note(f"Metadata v4: broker 0 at the listen address, controller 0, 'bad/y' refused, meta-ok auto-created; "
                  f"allow_auto_topic_creation=false -> error {unasked['meta-unasked'][0]}, {'created' if created else 'not created'}")


class NoAutoCreateTests(ServerTestCase):
    server_options = ("--no-kafka-auto-create",)

    def test_no_auto_create(self):
        _, _, topics = metadata_v4(self.server.kafka_port, ["nope"])
        self.assertNotEqual(topics["nope"][0], 0, "Metadata for an unknown topic with --no-kafka-auto-create")
        producer = kp_producer(self.bootstrap, max_block_ms=2000)
        try:
            with self.assertRaises(Exception):
                kp_send(producer, "nope", [b"x"], timeout=5)
        finally:
            close_quietly(lambda: producer.close(timeout=5))
        self.assertNotIn("nope.0", self.server.log_names())
        admin = kp_admin(self.bootstrap)
        self.addCleanup(close_quietly, admin.close)
        result = admin.create_topics(new_topics("made", 1), timeout_ms=10000, raise_errors=False)
        self.assertEqual(topic_errors(result).get("made", 0), 0)
        producer = kp_producer(self.bootstrap)
        try:
            self.assertEqual(kp_send(producer, "made", [b"a", b"b"]), [0, 1])
        finally:
            close_quietly(lambda: producer.close(timeout=10))
        self.note(f"unknown topic answered error {topics['nope'][0]} and nothing created; CreateTopics still works")


class ListenTests(unittest.TestCase):
    """--kafka-listen off, and the default 127.0.0.1:9092."""

    def setUp(self):
        self.summary = ""
        signal.setitimer(signal.ITIMER_REAL, 60)

    def tearDown(self):
        signal.setitimer(signal.ITIMER_REAL, 0)

    def test_listen_off_and_default(self):
        server = Ringlogd(kafka="off")
        try:
            self.assertEqual(listening_ports(server.process.pid), {server.port}, "with --kafka-listen off only the native port listens")
        finally:
            server.cleanup()
        if port_accepts(9092):
            self.summary = "--kafka-listen off: native port only (default 9092 not checked: something else listens there)"
            return
        server = Ringlogd(kafka="default")
        try:
            self.assertEqual(listening_ports(server.process.pid), {server.port, 9092})
            self.assertIn(API_METADATA, api_versions(9092))
        finally:
            server.cleanup()
        self.summary = "--kafka-listen off: native port only; no --kafka-listen: Kafka on 127.0.0.1:9092"


# --------------------------------------------------------------------------------------------
# h. Hostile input


class HostileTests(ServerTestCase):
    def test_hostile_input_then_still_serves(self):
        port = self.server.kafka_port
        outcomes = []
        for size, label in ((-1, "size -1"), (0x7FFFFFFF, "size 2 GiB - 1"), (-0x80000000, "size 0x80000000")):
            with KafkaWire(port) as wire:
                wire.sock.sendall(struct.pack(">i", size) + bytes(8))
                self.assertTrue(wire.closed_within(5), f"a frame announcing {label} did not close the connection")
        outcomes.append("bad sizes closed")

        with KafkaWire(port) as wire:  # an API that does not exist
            correlation = wire.send(1000, 0, b"\x00" * 16)
            wire.sock.settimeout(5)
            try:
                frame = read_frame(wire.sock)
            except (OSError, ValueError):
                frame = None
            if frame is not None:
                self.assertEqual(struct.unpack_from(">i", frame, 0)[0], correlation, "the answer to an unknown API key")
            outcomes.append("unknown API key " + ("answered" if frame is not None else "closed"))

        with KafkaWire(port) as wire:  # ApiVersions at a version from the future: KIP-511's answer
            body = compact_string("ringlog-kafka-test") + compact_string("1.0") + b"\x00"
            reader = wire.call(API_VERSIONS, 99, body, header_v2=True)
            self.assertEqual(reader.int16(), UNSUPPORTED_VERSION, "ApiVersions v99")
            ranges = reader.array(lambda: (reader.int16(), reader.int16(), reader.int16()))
            self.assertIn(API_VERSIONS, [key for key, _, _ in ranges], "ApiVersions v99 must say which versions exist")
        outcomes.append("ApiVersions v99 -> UNSUPPORTED_VERSION")

        stalled = KafkaWire(port)  # half a frame, then silence: must not hold anyone else up
        self.addCleanup(stalled.close)
        stalled.sock.sendall(struct.pack(">i", 100) + bytes(10))

        fragments = {}
        with KafkaWire(port) as wire:  # a header cut short, then the write side closed
            wire.sock.sendall(struct.pack(">i", 64) + struct.pack(">hh", API_METADATA, 4))
            wire.sock.shutdown(socket.SHUT_WR)
            fragments["cut header"] = "closed" if wire.closed_within(5) else "left open"
        with KafkaWire(port) as wire:  # a whole frame whose body stops early: 5 topics promised, none sent
            wire.send(API_METADATA, 4, struct.pack(">i", 5))
            fragments["short body"] = "closed or answered" if wire.closed_within(5) else "left open"
        with KafkaWire(port) as wire:  # frames too small for a header
            wire.sock.sendall(struct.pack(">i", 0) + struct.pack(">i", 3) + b"abc")
            fragments["tiny frames"] = "closed" if wire.closed_within(3) else "left open"
        with KafkaWire(port) as wire:  # seeded garbage
            wire.sock.sendall(random.Random(7).randbytes(65536))
            fragments["64 KiB garbage"] = "closed" if wire.closed_within(5) else "left open"
        self.assertTrue(self.server.alive(), f"ringlogd died from hostile input:\n{self.server.log_tail()}")

        supported = api_versions(port)
        topic = "after-hostile"
        values = [f"still-{index}".encode() for index in range(10)]
        producer = kp_producer(self.bootstrap, acks="all")
        try:
            self.assertEqual(kp_send(producer, topic, values), list(range(10)))
        finally:
            close_quietly(lambda: producer.close(timeout=10))
        rows, ends = kp_read(self.bootstrap, [(topic, 0)], len(values), timeout=20)
        self.assertRows(rows, ends, {(topic, 0): values}, what="after hostile input")
        code, out, err = self.server.ringlog("info", f"{topic}.0", "--json")
        self.assertEqual(code, 0, f"ringlog info {topic}.0: {err}")
        table = " ".join(f"{key}:{low}-{high}" for key, (low, high) in sorted(supported.items()))
        self.note("; ".join(outcomes) + "; " + ", ".join(f"{what} {how}" for what, how in fragments.items())
                  + f"; then produce/consume and `ringlog info` fine. ApiVersions: {table}")


# --------------------------------------------------------------------------------------------
# Running


class SummaryResult(unittest.TextTestResult):
    """One line per test: status, name, seconds, and the test's own summary."""

    def startTest(self, test):
        self._started = time.monotonic()
        super().startTest(test)

    def _line(self, status, test, detail=""):
        elapsed = time.monotonic() - getattr(self, "_started", time.monotonic())
        name = test.id().replace("__main__.", "")
        summary = getattr(test, "summary", "") if status == "ok" else detail
        self.stream.writeln(f"{status:<5} {name} ({elapsed:.1f}s){': ' + summary if summary else ''}")
        self.stream.flush()

    passed = 0

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed += 1
        self._line("ok", test)

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._line("FAIL", test, str(err[1]).splitlines()[0] if str(err[1]) else err[0].__name__)

    def addError(self, test, err):
        super().addError(test, err)
        self._line("ERROR", test, f"{err[0].__name__}: {str(err[1]).splitlines()[0] if str(err[1]) else ''}")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._line("skip", test, reason)


def main(arguments):
    if not VERBOSE:
        logging.basicConfig(level=logging.ERROR)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    else:
        logging.basicConfig(level=logging.INFO)
    loader = unittest.TestLoader()
    module = sys.modules[__name__]
    suite = loader.loadTestsFromNames(arguments, module) if arguments else loader.loadTestsFromModule(module)
    start_watchdog(TOTAL_SECONDS)
    signal.signal(signal.SIGALRM, _alarm)
    versions = [f"ringlogd {RINGLOGD}"]
    if kafka is not None:
        versions.append(f"kafka-python {kafka.__version__}")
    if ck is not None:
        versions.append(f"confluent-kafka {ck.__version__} (librdkafka {ck.libversion()[0]})")
    if KCAT:
        banner = subprocess.run([KCAT, "-V"], capture_output=True, text=True, timeout=10).stdout
        versions.append(next((line.strip() for line in banner.splitlines() if line.startswith("Version")), "kcat"))
    print("Kafka client tests: " + "; ".join(versions), flush=True)
    result = unittest.TextTestRunner(stream=sys.stdout, verbosity=0, resultclass=SummaryResult).run(suite)
    kill_all_servers()
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    print(f"{result.passed} passed, {failed} failed, {len(result.skipped)} skipped", flush=True)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
