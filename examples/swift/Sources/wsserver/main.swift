// An echo server on two stacks at once, net:…~shs and ws://…~shs, that also
// serves an HTML page to plain HTTP requests on its ws:// port (the page a
// browser would load to connect back over WebSocket).
//
//     swift run wsserver serve    # prints its addresses and the page's URL
//     swift run wsserver demo     # serves, then echoes over each stack
import MultiServer
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

let page = """
    <!doctype html>
    <html><head><meta charset="utf-8"><title>multiserver wsserver</title></head>
    <body><h1>multiserver wsserver</h1>
    <p>An echo server over shs, on net and on WebSocket.</p>
    </body></html>

    """

/// Echoes every byte until the peer's end, then ends its own write side.
@Sendable func echo(_ conn: Connection) {
    Task {
        try? await conn.executeThenClose { c in
            for try await chunk in c { try await c.write(chunk) }
            try await c.shutdownWrite()
        }
    }
}

/// The http:// URL of the page: the host and port of the ws alternative.
func pageURL(_ addresses: [String]) -> String? {
    guard let ws = addresses.first(where: { $0.hasPrefix("ws") }) else { return nil }
    // "ws:127.0.0.1:PORT~shs:KEY" or "ws://127.0.0.1:PORT~shs:KEY"
    var transport = String(ws.split(separator: "~")[0])
    if transport.hasPrefix("ws://") { transport.removeFirst(5) } else { transport.removeFirst(3) }
    return "http://\(transport)/"
}

func serve(_ ms: MultiServer) throws -> Listener {
    try ms.setHTTPHandler { req in
        req.method == "GET" && req.path == "/" ? .html(page) : .notFound
    }
    return try ms.listen(["net:127.0.0.1:0~shs", "ws://127.0.0.1:0~shs"], onConnection: echo)
}

let arguments = CommandLine.arguments.dropFirst()
switch arguments.first {
case "serve":
    try await MultiServer.withMultiServer(keys: .generate()) { ms in
        let listener = try serve(ms)
        let addresses = listener.address.split(separator: ";").map(String.init)
        for address in addresses { print("wsserver: listening on \(address)") }
        print("wsserver: page at \(pageURL(addresses) ?? "?")")
        fflush(nil) // every stream: run.sh reads these lines from a file
        try await Task.sleep(for: .seconds(3600))
    }

case "demo":
    try await MultiServer.withMultiServer(keys: .generate()) { server in
        let listener = try serve(server)
        try await MultiServer.withMultiServer(keys: .generate()) { client in
            for address in listener.address.split(separator: ";").map(String.init) {
                try await client.withConnection(to: address) { conn in
                    precondition(conn.remoteKey == server.publicKey, "shs checked the server's key")
                    let text = "hello over \(address.split(separator: ":")[0])\n"
                    try await conn.write(text.utf8)
                    try await conn.shutdownWrite()
                    var back: [UInt8] = []
                    for try await chunk in conn { back += chunk }
                    precondition(String(decoding: back, as: UTF8.self) == text, "echoed")
                    print("echoed: " + text, terminator: "")
                }
            }
        }
    }
    print("wsserver demo: done")

default:
    print("usage: wsserver serve | wsserver demo")
}
