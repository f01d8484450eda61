// swift-tools-version: 6.2
//
// multiserver: a C11 core (Sources/CMultiServer, public headers in include/
// reached through the symlink Sources/CMultiServer/include) with a thin Swift
// module over it (Sources/MultiServer) and a C command-line tool
// (Sources/MultiServerCLI). The Makefile builds the same C sources for C users.
//
// No unsafeFlags: a package that uses them cannot be used as a dependency.
import PackageDescription

let package = Package(
    name: "multiserver",
    products: [
        .library(name: "MultiServer", targets: ["MultiServer"]),
        .executable(name: "multiserver", targets: ["MultiServerCLI"]),
    ],
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
            dependencies: ["CMultiServer"],
            path: "Sources/MultiServer",
            swiftSettings: [
                .swiftLanguageMode(.v6),
                .treatAllWarnings(as: .error),
            ]
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
            dependencies: ["MultiServer"],
            path: "Tests/MultiServerTests",
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
