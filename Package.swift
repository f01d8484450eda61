// swift-tools-version: 6.2
//
// multiserver: a C11 core (Sources/CMultiServer, public headers in include/
// reached through the symlink Sources/CMultiServer/include) with a thin Swift
// module over it (Sources/MultiServer) and a C command-line tool
// (Sources/MultiServerCLI). The Makefile builds the same C sources for C users.
//
// No unsafeFlags: a package that uses them cannot be used as a dependency.
//
// Identity: as a path dependency (`.package(path: "../multiserver")`) this
// package is known by its directory's name, as a URL dependency by the URL's
// last component; depend on `.product(name: "MultiServer", package: <that>)`.
import PackageDescription

// Warnings are errors only when asked (MULTISERVER_STRICT=1, as
// Tests/consumer/run.sh and CI do): SwiftPM applies a package's
// `.treatAllWarnings(as: .error)` to it also when it is a *path* dependency,
// so a new compiler's warning would break every vendoring user's build.
let strict = Context.environment["MULTISERVER_STRICT"] == "1"
let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)] + (strict ? [.treatAllWarnings(as: .error)] : [])

// The DocC plugin only when building the documentation
// (MULTISERVER_DOCS=1 swift package generate-documentation --target MultiServer),
// so that path-dependency users never have to resolve it.
let docs = Context.environment["MULTISERVER_DOCS"] == "1"

let package = Package(
    name: "multiserver",
    // Duration (macOS 13), discarding task groups (macOS 14) and the
    // AsyncSequence `next(isolation:)` requirement (macOS 15) set the floor.
    platforms: [.macOS(.v15), .iOS(.v18), .tvOS(.v18), .watchOS(.v11), .visionOS(.v2)],
    products: [
        .library(name: "MultiServer", targets: ["MultiServer"]),
        .executable(name: "multiserver", targets: ["MultiServerCLI"]),
    ],
    // swift-log: MultiServer.setLogger bridges the C log hook (multiserver_log.h).
    dependencies: [.package(url: "https://github.com/apple/swift-log", from: "1.16.2")]
        + (docs ? [.package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0")] : []),
    targets: [
        .target(
            name: "CMultiServer",
            path: "Sources/CMultiServer",
            // Laid out by layer (docs/architecture.md); private headers sit
            // beside their .c files.
            cSettings: [
                .define("_GNU_SOURCE"),
                .headerSearchPath("core"),
                .headerSearchPath("wire"),
            ],
            linkerSettings: [
                .linkedLibrary("uv"),
                .linkedLibrary("sodium"),
                .linkedLibrary("z"),
                .linkedLibrary("ssl"),
                .linkedLibrary("crypto"),
                .linkedLibrary("pthread"),
            ]
        ),
        .target(
            name: "MultiServer",
            dependencies: ["CMultiServer", .product(name: "Logging", package: "swift-log")],
            path: "Sources/MultiServer",
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "MultiServerCLI",
            dependencies: ["CMultiServer"],
            path: "Sources/MultiServerCLI",
            cSettings: [
                .define("_GNU_SOURCE"),
                // The shs1-test subcommand drives the handshake core directly
                // (shs_core.h is private to CMultiServer), as the Makefile's
                // -ISources/CMultiServer/wire does.
                .headerSearchPath("../CMultiServer/wire"),
            ]
        ),
        .testTarget(
            name: "MultiServerTests",
            dependencies: ["MultiServer", .product(name: "Logging", package: "swift-log")],
            path: "Tests/MultiServerTests",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
