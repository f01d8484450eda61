internal import CMultiServer

/// An ed25519 key pair: a Scuttlebutt identity, used by the secret handshake.
///
/// The key functions are pure (no loop, no handles), so they are called
/// directly from the calling thread.
public struct KeyPair: Sendable, Equatable, CustomStringConvertible {
    /// The 32-byte ed25519 public key.
    public let publicKey: [UInt8]
    /// The 64-byte ed25519 secret key (seed ‖ public key), in a buffer of its
    /// own that is wiped when the last copy of this key pair goes away.
    private let secret: SecretKeyStorage

    init(_ kp: ms_keypair_t) {
        var kp = kp
        publicKey = withUnsafeBytes(of: &kp.public_key) { Array($0) }
        secret = SecretKeyStorage(copying: &kp)
        ms_keypair_wipe(&kp)
    }

    /// Same public key and (compared in constant time) same secret key.
    public static func == (lhs: KeyPair, rhs: KeyPair) -> Bool {
        lhs.publicKey == rhs.publicKey && lhs.secret.constantTimeEquals(rhs.secret)
    }

    /// A fresh random key pair. The corresponding C function is `ms_keypair_generate`.
    public static func generate() throws -> KeyPair {
        var kp = ms_keypair_t()
        defer { ms_keypair_wipe(&kp) }
        let rc = ms_keypair_generate(&kp)
        guard rc == 0 else { throw MultiServerError(rawValue: rc, operation: .keys) }
        return KeyPair(kp)
    }

    /// The key pair derived from a 32-byte seed.
    /// The corresponding C function is `ms_keypair_from_seed`.
    public init(seed: [UInt8]) throws {
        guard seed.count == Int(MS_SEEDBYTES) else {
            throw MultiServerError(rawValue: MS_EKEY.rawValue,
                                   reason: "a seed is \(MS_SEEDBYTES) bytes, not \(seed.count)",
                                   operation: .keys)
        }
        var kp = ms_keypair_t()
        defer { ms_keypair_wipe(&kp) }
        let rc = seed.withUnsafeBufferPointer { ms_keypair_from_seed(&kp, $0.baseAddress) }
        guard rc == 0 else { throw MultiServerError(rawValue: rc, operation: .keys) }
        self.init(kp)
    }

    /// Reads a key pair from a secret file in the `~/.ssb/secret` format.
    /// The corresponding C function is `ms_keypair_load`.
    public init(secretFile path: String) throws {
        var kp = ms_keypair_t()
        defer { ms_keypair_wipe(&kp) }
        let rc = ms_keypair_load(&kp, path)
        guard rc == 0 else {
            throw MultiServerError(rawValue: rc, reason: path, operation: .keys)
        }
        self.init(kp)
    }

    /// Writes the key pair to a new secret file (mode 0600) in the
    /// `~/.ssb/secret` format; an existing file is not overwritten
    /// (`MS_EEXIST`). The corresponding C function is `ms_keypair_save`.
    public func save(to path: String) throws {
        let rc = withCKeyPair { ms_keypair_save($0, path) }
        guard rc == 0 else {
            throw MultiServerError(rawValue: rc, reason: path, operation: .keys)
        }
    }

    /// The Scuttlebutt identity, `"@<base64>.ed25519"`.
    /// The corresponding C function is `ms_key_to_id`.
    public var id: String { KeyPair.id(of: publicKey) }

    /// The public key in standard base64, as used in `shs:KEY` address sections.
    /// The corresponding C function is `ms_key_to_base64`.
    public var publicKeyBase64: String { KeyPair.base64(of: publicKey) }

    public var description: String { "KeyPair(\(id))" }

    /// Calls body with a C key pair that is wiped afterwards.
    func withCKeyPair<R>(_ body: (UnsafePointer<ms_keypair_t>) throws -> R) rethrows -> R {
        var kp = ms_keypair_t()
        defer { ms_keypair_wipe(&kp) }
        secret.copy(into: &kp)
        return try withUnsafePointer(to: &kp) { try body($0) }
    }

    static func id(of key: [UInt8]) -> String {
        precondition(key.count == Int(MS_PUBLICKEYBYTES))
        var buf = [CChar](repeating: 0, count: Int(MS_ID_LEN) + 1)
        let rc = key.withUnsafeBufferPointer { ms_key_to_id($0.baseAddress, &buf, buf.count) }
        precondition(rc == 0, "ms_key_to_id failed: \(rc)")
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func base64(of key: [UInt8]) -> String {
        precondition(key.count == 32)
        var buf = [CChar](repeating: 0, count: 45)
        let rc = key.withUnsafeBufferPointer { ms_key_to_base64($0.baseAddress, &buf, buf.count) }
        precondition(rc == 0, "ms_key_to_base64 failed: \(rc)")
        return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The secret half of a key pair: a heap buffer (never a Swift array, which
/// could be copied around and freed unwiped) holding a whole `ms_keypair_t`,
/// wiped with `ms_keypair_wipe` (sodium_memzero) in `deinit`.
///
/// `@unchecked Sendable`: the buffer is written once, in `init`, and only
/// read afterwards (until `deinit`, when no other reference exists), so
/// concurrent readers never race.
private final class SecretKeyStorage: @unchecked Sendable {
    private let pair: UnsafeMutablePointer<ms_keypair_t>

    init(copying kp: inout ms_keypair_t) {
        pair = .allocate(capacity: 1)
        pair.initialize(to: kp)
    }

    deinit {
        ms_keypair_wipe(pair)
        pair.deinitialize(count: 1)
        pair.deallocate()
    }

    func copy(into kp: inout ms_keypair_t) { kp = pair.pointee }

    /// Compares the secret keys without an early exit, so the time taken
    /// does not tell how many leading bytes agree.
    func constantTimeEquals(_ other: SecretKeyStorage) -> Bool {
        if self === other { return true }
        return withUnsafeBytes(of: &pair.pointee.secret_key) { a in
            withUnsafeBytes(of: &other.pair.pointee.secret_key) { b in
                var difference: UInt8 = 0
                for i in 0..<a.count { difference |= a[i] ^ b[i] }
                return difference == 0
            }
        }
    }
}

/// A network key ("app key", "caps.shs"): peers handshake only when they use
/// the same one.
public struct AppKey: Sendable, Hashable {
    /// The 32 key bytes.
    public let bytes: [UInt8]

    /// The main Scuttlebutt network key
    /// (`1KHLiKZvAvjbY1ziZEHMXawbCEIM6qwjCDm3VYRan/s=`).
    /// The corresponding C function is `ms_appkey_scuttlebutt`.
    public static let scuttlebutt = AppKey(
        uncheckedBytes: Array(UnsafeBufferPointer(start: ms_appkey_scuttlebutt(),
                                                  count: Int(MS_APPKEYBYTES))))

    private init(uncheckedBytes: [UInt8]) { bytes = uncheckedBytes }

    /// A network key of exactly 32 bytes.
    public init(bytes: [UInt8]) throws {
        guard bytes.count == Int(MS_APPKEYBYTES) else {
            throw MultiServerError(rawValue: MS_EKEY.rawValue,
                                   reason: "an app key is \(MS_APPKEYBYTES) bytes, not \(bytes.count)",
                                   operation: .appKey)
        }
        self.bytes = bytes
    }

    /// A network key from standard base64 (44 characters, with padding).
    /// The corresponding C function is `ms_key_from_base64`.
    public init(base64: String) throws {
        var key = [UInt8](repeating: 0, count: Int(MS_APPKEYBYTES))
        var text = base64
        let rc = text.withUTF8 { utf8 in
            utf8.withMemoryRebound(to: CChar.self) { ms_key_from_base64(&key, $0.baseAddress, $0.count) }
        }
        guard rc == 0 else {
            throw MultiServerError(rawValue: rc, reason: "not base64 of 32 bytes", operation: .appKey)
        }
        bytes = key
    }

    /// The key in standard base64.
    public var base64: String { KeyPair.base64(of: bytes) }
}
