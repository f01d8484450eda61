// swift-tools-version: 6.2
//
// A separate package that uses multiserver the way a vendoring user does: as
// a path dependency. Built and tested by run.sh (part of `make swift-test`).
import PackageDescription
import Foundation

// A path dependency's identity is the last component of its path, i.e. the
// name of the directory the multiserver checkout lives in ("multiserver" for
// a plain clone). This checkout may be called anything, so work it out.
let root = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent()
let multiserver = root.lastPathComponent.lowercased()

let package = Package(
    name: "consumer",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../.."),
    ],
    targets: [
        .executableTarget(
            name: "ConsumerApp",
            dependencies: [.product(name: "MultiServer", package: multiserver)]
        ),
        .testTarget(
            name: "ConsumerTests",
            dependencies: [.product(name: "MultiServer", package: multiserver)]
        ),
    ]
)
