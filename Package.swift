// swift-tools-version:6.0
import PackageDescription

// Dependency direction (see README "Layout"): C libraries → HubNative → HubProtocol → HubCore → HubRedis → HubServer → hub.
// HubProtocol is pure: no sockets, no NIOPosix, no Foundation networking.
// The delivery path (HubCore's router, HubServer's handlers) is confined to its event loop: in release builds the
// run-time exclusivity checks on its class properties (a thread-local access set, touched several times per
// delivered message) are off. Debug builds, which the tests run, keep them.
let hotPath: [SwiftSetting] = [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]

let package = Package(
    name: "execution-stream-hub",
    // macOS 15: the Synchronization module's atomics (Linux has no such floor).
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "hub", targets: ["hub"]),
        .executable(name: "loadgen", targets: ["loadgen"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CHubZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CHubCrypto",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        // No pkgConfig here: Debian's hiredis.pc adds -D_FILE_OFFSET_BITS=64, which SwiftPM refuses with a warning
        // on every build. The headers are in the default include path (<hiredis/hiredis.h>).
        .systemLibrary(
            name: "CHubHiredis",
            providers: [.apt(["libhiredis-dev"])]
        ),
        // The only target that calls C.
        .target(
            name: "HubNative",
            dependencies: [
                "CHubZlib", "CHubCrypto", "CHubHiredis",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Pure protocol code: RFC 6455 framing and handshake, RFC 7692, SSE encoding.
        .target(
            name: "HubProtocol",
            dependencies: [
                "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        // Pure hub logic: events, tokens, ingestion rules, sessions, the router and the embedded broker. No sockets.
        .target(
            name: "HubCore",
            dependencies: [
                "HubProtocol",
                "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: hotPath
        ),
        // The Redis-backed broker and stream limiter: hiredis's reader and command formatting (through HubNative),
        // the socket I/O on SwiftNIO.
        .target(
            name: "HubRedis",
            dependencies: [
                "HubCore",
                "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "HubServer",
            dependencies: [
                "HubCore",
                "HubRedis",
                "HubProtocol",
                "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            // The browser client and the demo page, served by the hub.
            resources: [.copy("Web")],
            swiftSettings: hotPath
        ),
        .executableTarget(
            name: "hub",
            dependencies: [
                "HubServer",
                "HubRedis",
                "HubCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The benchmarks' load generator (Tests/bench): subscribers and an open-loop publisher, for the hub and Nchan,
        // and the floor server the benchmarks measure beside them.
        .executableTarget(
            name: "loadgen",
            dependencies: [
                "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        // libFuzzer entry points for the parsers (Tests/fuzz). Built with `-sanitize=fuzzer,address -DFUZZING` by
        // Tests/fuzz/run.sh; a plain build is a runner that feeds input files through the same checks.
        .executableTarget(
            name: "HubFuzz",
            dependencies: [
                "HubCore", "HubProtocol", "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "HubNativeTests",
            dependencies: ["HubNative", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "HubProtocolTests",
            dependencies: ["HubProtocol", "HubNative", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "HubCoreTests",
            dependencies: [
                "HubCore", "HubProtocol", "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "HubRedisTests",
            dependencies: [
                "HubRedis", "HubCore", "HubNative",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "HubServerTests",
            dependencies: [
                "HubServer", "HubProtocol", "HubCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
    ]
)
