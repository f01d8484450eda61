// swift-tools-version: 6.2
//
// A chat between two peers over shs, using multiserver as a path dependency.
//
//     swift run chat serve                 # prints the address to give the other peer
//     swift run chat connect 'net:127.0.0.1:PORT~shs:KEY'
//     swift run chat demo                  # both peers in one process
//     swift run wsserver serve             # echo on net~shs and ws~shs, a page over HTTP
//     swift run wsserver demo
//
// run.sh builds both and checks them (the page with curl or python3).
// Tests/consumer/run.sh builds it and runs the demo.
import PackageDescription
import Foundation

// A path dependency's identity is its directory's name (see README.md).
let multiserver = URL(fileURLWithPath: Context.packageDirectory)
    .deletingLastPathComponent().deletingLastPathComponent().lastPathComponent.lowercased()

let package = Package(
    name: "multiserver-examples",
    platforms: [.macOS(.v15)],
    dependencies: [.package(path: "../..")],
    targets: [
        .executableTarget(
            name: "chat",
            dependencies: [.product(name: "MultiServer", package: multiserver)]
        ),
        .executableTarget(
            name: "wsserver",
            dependencies: [.product(name: "MultiServer", package: multiserver)]
        ),
    ]
)
