
import Testing
@testable import MultiServer

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A one-shot signal that tasks can wait for.
final class Signal: Sendable {
    private let state = Locked<(fired: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func fire() {
        let waiters = state.withLock { s in
            let w = s.waiters
            s.fired = true
            s.waiters = []
            return w
        }
        for w in waiters { w.resume() }
    }

    var fired: Bool { state.withLock { $0.fired } }

    func wait() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s in
                if s.fired { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// A value collected from callbacks.
final class Collected<T: Sendable>: Sendable {
    private let values = Locked<[T]>([])
    func append(_ v: T) { values.withLock { $0.append(v) } }
    var all: [T] { values.withLock { $0 } }
}

/// Deterministic pseudo-random bytes (xorshift64*).
func testBytes(_ count: Int, seed: UInt64 = 0x9E37_79B9_7F4A_7C15) -> [UInt8] {
    var x = seed
    var out = [UInt8](repeating: 0, count: count)
    var i = 0
    while i < count {
        x ^= x >> 12; x ^= x << 25; x ^= x >> 27
        var v = x &* 0x2545_F491_4F6C_DD1D
        for _ in 0..<8 where i < count {
            out[i] = UInt8(truncatingIfNeeded: v)
            v >>= 8
            i += 1
        }
    }
    return out
}

/// FNV-1a, 64 bit.
func checksum(_ bytes: [UInt8]) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return h
}

/// A fresh private directory under /tmp (short enough for unix socket paths).
func makeTempDir() -> String {
    var template = Array("/tmp/mstest-XXXXXX".utf8CString)
    let made = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
    precondition(made != nil, "mkdtemp failed")
    return String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

func removeTree(_ path: String) {
    if let dir = opendir(path) {
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            unlink(path + "/" + name)
        }
        closedir(dir)
    }
    rmdir(path)
}

/// Echo server handler: returns every byte until the client's end, then ends
/// its own write side and closes.
@Sendable func echo(_ connection: Connection) {
    Task {
        do {
            for try await chunk in connection.bytes {
                try await connection.write(chunk)
            }
            try await connection.shutdownWrite()
        } catch {
            // The test on the other side reports what went wrong.
        }
        await connection.close()
    }
}

/// Reads a connection until its clean end.
func readAll(_ connection: Connection) async throws -> [UInt8] {
    var out: [UInt8] = []
    for try await chunk in connection.bytes { out += chunk }
    return out
}

/// Sends data in chunks, ends the write side, and returns everything the peer
/// sent back until its end; closes the connection.
func exchange(_ connection: Connection, _ data: [UInt8], chunkSize: Int = 16 * 1024) async throws -> [UInt8] {
    async let received = readAll(connection)
    var offset = 0
    while offset < data.count {
        let end = min(offset + chunkSize, data.count)
        try await connection.write(Array(data[offset..<end]))
        offset = end
    }
    try await connection.shutdownWrite()
    let result = try await received
    await connection.close()
    return result
}

/// Splits a listener's advertised multiaddress into its alternatives.
func alternatives(_ address: String) -> [String] {
    address.split(separator: ";").map(String.init)
}

/// The port of a `net:HOST:PORT…` address.
func port(of address: String) -> Int? {
    let transport = address.split(separator: "~").first.map(String.init) ?? address
    return transport.split(separator: ":").last.flatMap { Int($0) }
}
