// swift-tools-version: 6.2
//
// Module map (dependencies point down only):
//
//   ringlogd, ringlog, ...            executables
//   RingLogServer, RingLogClient      the server on the loop core; the client library on the loop core
//   RingLogDiskIO                     carrying out the storage engine's disk requests on io_uring
//   RingLogStorage                    segments, recovery, retention: decides, performs no I/O
//   RingLogKafka                      Kafka's wire primitives and record batches (pure)
//   RingLogWire, RingLogIO            byte formats (pure); the io_uring loop core
//   CLiburing, CRingLogSupport        system shims: liburing, CRC32C and GNU-only libc
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
]

/// The server-side modules and the CLI (never part of the RingLogClient library product, so
/// other packages can still depend on that by version) drop Swift's run-time exclusivity checks
/// in release builds: they were a third of the instructions of a durable append (docs/benchmarks.md).
/// Debug builds, which run every test, keep the checks, so an overlapping access still fails there.
let serverSide: [SwiftSetting] = strict + [
    .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
    name: "RingLog",
    products: [
        .library(name: "RingLogClient", targets: ["RingLogClient"]),
        .executable(name: "ringlogd", targets: ["ringlogd"]),
        .executable(name: "ringlog", targets: ["ringlog"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-system", from: "1.8.1"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    ],
    targets: [
        .systemLibrary(
            name: "CLiburing",
            pkgConfig: "liburing",
            providers: [.apt(["liburing-dev"])]
        ),
        .target(
            name: "CRingLogSupport"
        ),
        .target(
            name: "RingLogWire",
            dependencies: ["CRingLogSupport"],
            swiftSettings: serverSide
        ),
        // Kafka's wire primitives and record batches (the Kafka listener of issue 17 builds on it).
        .target(
            name: "RingLogKafka",
            dependencies: ["RingLogWire"],
            swiftSettings: serverSide
        ),
        .target(
            name: "RingLogIO",
            dependencies: [
                "CLiburing", "CRingLogSupport", "RingLogWire",
                .product(name: "SystemPackage", package: "swift-system"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "RingLogStorage",
            dependencies: [
                "RingLogWire",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: serverSide
        ),
        .target(
            name: "RingLogDiskIO",
            dependencies: ["RingLogStorage", "RingLogIO", "CLiburing"],
            swiftSettings: serverSide
        ),
        .target(
            name: "RingLogSimulation",
            dependencies: ["RingLogStorage", "RingLogWire", "RingLogTestKit"],
            swiftSettings: strict
        ),
        .target(
            name: "RingLogServer",
            dependencies: [
                "RingLogStorage", "RingLogDiskIO", "RingLogWire", "RingLogIO", "RingLogKafka", "CLiburing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: serverSide
        ),
        .target(
            name: "RingLogClient",
            dependencies: [
                "RingLogWire", "RingLogIO", "CLiburing",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ringlogd",
            dependencies: [
                "RingLogServer", "RingLogStorage", "RingLogWire", "RingLogIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ringlog",
            dependencies: [
                "RingLogClient", "RingLogTestKit", "RingLogWire", "RingLogIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ringlog-torture",
            dependencies: [
                "RingLogClient", "RingLogTestKit", "RingLogWire", "RingLogIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "ringlog-storage-bench",
            dependencies: [
                "RingLogStorage", "RingLogDiskIO", "RingLogWire", "RingLogIO",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogIOTests",
            dependencies: ["RingLogIO", .product(name: "SystemPackage", package: "swift-system")],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogKafkaTests",
            dependencies: ["RingLogKafka", "RingLogWire"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogWireTests",
            dependencies: ["RingLogWire"],
            swiftSettings: strict
        ),
        // Test helpers that need no server or storage: failures, payloads, the seeded generator, a
        // checking batch walker, a raw protocol client and ringlogd child processes. The storage
        // tests, the server tests and the torture tool all use this one copy.
        .target(
            name: "RingLogTestKit",
            dependencies: ["RingLogWire", "RingLogIO"],
            swiftSettings: strict
        ),
        // An in-process server for tests.
        .target(
            name: "RingLogTesting",
            dependencies: [
                "RingLogTestKit", "RingLogServer", "RingLogStorage", "RingLogWire", "RingLogIO",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogServerTests",
            dependencies: ["RingLogTesting", "RingLogTestKit", "RingLogServer", "RingLogStorage", "RingLogDiskIO", "RingLogWire", "RingLogIO", "RingLogKafka", "CRingLogSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogClientTests",
            dependencies: ["RingLogClient", "RingLogTesting", "RingLogTestKit", "RingLogServer", "RingLogStorage", "RingLogWire", "RingLogIO"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "RingLogStorageTests",
            dependencies: ["RingLogStorage", "RingLogSimulation", "RingLogTestKit", "RingLogWire", "RingLogIO"],
            swiftSettings: strict
        ),
    ]
)
