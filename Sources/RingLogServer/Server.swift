import CLiburing
import Dispatch
import Glibc
import Logging
import RingLogDiskIO
import RingLogIO
import RingLogStorage
import Synchronization

/// Why ringlogd could not start, in words an operator can act on.
public struct ServerStartError: Error, CustomStringConvertible, Sendable {
    public let description: String
    /// Settings out of range, when that is why.
    public let problems: [SettingProblem]
    public init(_ description: String, problems: [SettingProblem] = []) {
        self.description = description
        self.problems = problems
    }
}

/// A running ringlogd: the event loop on its own thread, owning everything it serves.
public final class Server: Sendable {
    /// Where it listens (the real port when the configuration asked for port 0).
    public let boundAddress: SocketAddress
    /// Where it serves `GET /metrics`, when asked to.
    public let metricsAddress: SocketAddress?
    /// Where the Kafka listener is bound, when there is one.
    public let kafkaAddress: SocketAddress?
    public let recoveryReports: [RecoveryReport]
    private let wakeup: Wakeup
    private let control: ServerControl
    private let thread: pthread_t

    private init(
        boundAddress: SocketAddress, metricsAddress: SocketAddress?, kafkaAddress: SocketAddress?, recoveryReports: [RecoveryReport], wakeup: Wakeup,
        control: ServerControl, thread: pthread_t
    ) {
        self.boundAddress = boundAddress
        self.metricsAddress = metricsAddress
        self.kafkaAddress = kafkaAddress
        self.recoveryReports = recoveryReports
        self.wakeup = wakeup
        self.control = control
        self.thread = thread
    }

    /// Sets up io_uring, recovers the data directory, binds, and starts serving. Returns once the
    /// server listens, or throws saying what failed and what to do about it.
    public static func start(_ configuration: ServerConfiguration, logger: Logger = Logger(label: "ringlogd")) throws(ServerStartError) -> Server {
        let problems = configuration.problems()
        if !problems.isEmpty {
            throw ServerStartError("invalid configuration: " + problems.map(\.description).joined(separator: "; "), problems: problems)
        }
        let wakeup = Wakeup()
        let control = ServerControl()
        let started = Mutex<Result<Started, ServerStartError>?>(nil)
        let ready = DispatchSemaphore(value: 0)
        let thread = spawnThread {
            runLoop(configuration: configuration, wakeup: wakeup, control: control, logger: logger) { result in
                started.withLock { $0 = result }
                ready.signal()
            }
            control.markStopped()
        }
        ready.wait()
        switch started.withLock({ $0 })! {
        case .failure(let error):
            joinThread(thread)
            throw error
        case .success(let running):
            return Server(
                boundAddress: running.address, metricsAddress: running.metricsAddress, kafkaAddress: running.kafkaAddress,
                recoveryReports: running.reports, wakeup: wakeup, control: control, thread: thread)
        }
    }

    /// Asks for a graceful stop (see `EventLoop.beginDraining`); returns at once. Safe from any thread.
    public func stop() {
        control.stopRequested = true
        wakeup.signal()
    }

    /// Waits until the loop thread has finished. Returns true when the stop was clean (every log
    /// checkpointed after its last append was acknowledged).
    @discardableResult
    public func wait() -> Bool {
        joinThread(thread)
        return control.cleanShutdown
    }

    public var isStopped: Bool { control.stopped }

    /// Suspends until the loop thread has finished; returns whether the stop was clean.
    public func stopped() async -> Bool {
        await withCheckedContinuation { continuation in control.whenStopped { continuation.resume(returning: $0) } }
    }

    struct Started: Sendable {
        var address: SocketAddress
        var metricsAddress: SocketAddress?
        var kafkaAddress: SocketAddress?
        var reports: [RecoveryReport]
    }

    private static func runLoop(
        configuration: ServerConfiguration, wakeup: Wakeup, control: ServerControl, logger: Logger,
        started: (Result<Started, ServerStartError>) -> Void
    ) {
        let ring: Ring
        let store: LogStore
        let loop: ServerLoop
        let bound: SocketAddress
        var metricsBound: SocketAddress?
        var kafkaBound: SocketAddress?
        var configuration = configuration
        do throws(ServerStartError) {
            // Every segment of every log is an open file: take all the descriptors allowed.
            let openFiles = raiseOpenFileLimit()
            logger.debug("open-file limit", metadata: ["limit": "\(openFiles)"])
            ring = try makeRing(entries: configuration.ringEntries)
            let disk: RingDisk
            do { disk = try RingDisk() } catch { throw ServerStartError(error.description) }
            switch LogStore.open(path: configuration.dataDirectory, configuration: configuration.storage, disk: disk, environment: .system, logger: logger) {
            case .failure(let error): throw ServerStartError("cannot open data directory \(configuration.dataDirectory): \(error)")
            case .success(let opened): store = opened
            }
            let listener: (fd: Int32, bound: SocketAddress)
            do { listener = try Sockets.listen(on: configuration.listen) } catch { throw ServerStartError(error.description) }
            bound = listener.bound
            var metricsFD: Int32?
            if let metricsListen = configuration.metricsListen {
                do {
                    let metrics = try Sockets.listen(on: metricsListen, backlog: 16)
                    metricsFD = metrics.fd
                    metricsBound = metrics.bound
                } catch {
                    close(listener.fd)
                    throw ServerStartError("metrics: \(error.description) (--metrics-listen)")
                }
            }
            var kafkaFD: Int32?
            if let kafka = configuration.kafka {
                do {
                    let bound = try Sockets.listen(on: kafka.listen)
                    kafkaFD = bound.fd
                    kafkaBound = bound.bound
                    if kafka.advertised == nil {
                        configuration.kafka!.advertised = (bound.bound.host, Int(bound.bound.port))
                    }
                } catch {
                    if kafka.optional {
                        logger.warning("Kafka listener off: \(error.description) (--kafka-listen)")
                        configuration.kafka = nil
                    } else {
                        close(listener.fd)
                        if let metricsFD { close(metricsFD) }
                        throw ServerStartError("kafka: \(error.description) (--kafka-listen)")
                    }
                }
            }
            do {
                loop = try ServerLoop(
                    configuration: configuration, ring: ring, store: store, listenFD: listener.fd, metricsFD: metricsFD, kafkaFD: kafkaFD,
                    wakeup: wakeup, control: control, logger: logger)
            } catch {
                close(listener.fd)
                if let kafkaFD { close(kafkaFD) }
                throw ServerStartError("cannot register receive buffers: \(error) (io_uring provided buffer rings need Linux 5.19 or newer)")
            }
        } catch {
            started(.failure(error))
            return
        }
        started(.success(Started(address: bound, metricsAddress: metricsBound, kafkaAddress: kafkaBound, reports: store.recoveryReports)))
        loop.run()
        loop.release()
        logger.notice("stopped", metadata: ["clean": "\(control.cleanShutdown)"])
    }

    /// A ring with the set-up flags the loop benefits from, falling back for older kernels, and a
    /// check that every operation the server issues is supported.
    private static func makeRing(entries: Int) throws(ServerStartError) -> Ring {
        let ring: Ring
        do { ring = try Ring.forEventLoop(entries: entries, completionEntries: entries * 4) } catch { throw ServerStartError(error.description) }
        let missing = ring.unsupportedOperations(RingOperation.ringOpcodes(ServerLoop.requiredOperations))
        if !missing.isEmpty {
            throw ServerStartError(
                "this kernel's io_uring lacks operations ringlogd needs: \(missing.joined(separator: ", ")). "
                    + "Run on Linux 6.0 or newer.")
        }
        return ring
    }
}
