import CHubHiredis

/// One Redis reply (RESP2), converted from hiredis's `redisReply` into Swift values.
public enum RESPValue: Equatable, Sendable {
    case status(String)
    case error(String)
    case integer(Int64)
    case bulk([UInt8])
    case null
    case array([RESPValue])
}

/// hiredis's RESP reader (`read.h`): bytes in, replies out, no I/O.
public final class RESPReader {
    public struct ProtocolError: Error, Equatable, Sendable {
        public let message: String
    }

    private let reader: UnsafeMutablePointer<redisReader>

    public init() {
        guard let r = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        reader = r
    }

    deinit {
        redisReaderFree(reader)
    }

    /// Appends bytes received from the server.
    public func feed(_ bytes: UnsafeRawBufferPointer) throws(ProtocolError) {
        guard !bytes.isEmpty else { return }
        let rc = redisReaderFeed(reader, bytes.baseAddress!.assumingMemoryBound(to: CChar.self), bytes.count)
        if rc != REDIS_OK { throw ProtocolError(message: errorString()) }
    }

    public func feed<Bytes: Collection<UInt8>>(_ bytes: Bytes) throws(ProtocolError) {
        let result = Array(bytes).withUnsafeBytes { raw in
            Result { () throws(ProtocolError) in try feed(raw) }
        }
        try result.get()
    }

    /// The next complete reply, or nil when more bytes are needed. After an error the reader is unusable.
    public func next() throws(ProtocolError) -> RESPValue? {
        var raw: UnsafeMutableRawPointer?
        let rc = redisReaderGetReply(reader, &raw)
        if rc != REDIS_OK { throw ProtocolError(message: errorString()) }
        guard let raw else { return nil }
        defer { freeReplyObject(raw) }
        return Self.convert(raw.assumingMemoryBound(to: redisReply.self))
    }

    private func errorString() -> String {
        withUnsafeBytes(of: reader.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    private static func convert(_ reply: UnsafeMutablePointer<redisReply>) -> RESPValue {
        let r = reply.pointee
        func text() -> [UInt8] {
            guard let str = r.str, r.len > 0 else { return [] }
            return Array(UnsafeRawBufferPointer(start: str, count: r.len))
        }
        switch r.type {
        case REDIS_REPLY_STATUS: return .status(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_ERROR: return .error(String(decoding: text(), as: UTF8.self))
        case REDIS_REPLY_INTEGER: return .integer(r.integer)
        case REDIS_REPLY_STRING: return .bulk(text())
        case REDIS_REPLY_NIL: return .null
        case REDIS_REPLY_ARRAY:
            var items: [RESPValue] = []
            items.reserveCapacity(r.elements)
            for i in 0..<r.elements {
                if let element = r.element[i] { items.append(convert(element)) } else { items.append(.null) }
            }
            return .array(items)
        default: return .null
        }
    }
}

/// Redis commands encoded by hiredis's `redisFormatCommandArgv` (binary-safe arguments).
public enum RESPCommand {
    public static func format(_ arguments: [[UInt8]]) -> [UInt8] {
        precondition(!arguments.isEmpty, "a command needs a name")
        var lengths = arguments.map { $0.count }
        // Keep every argument alive and contiguous for the duration of the call.
        let storage = arguments.map { bytes -> UnsafeMutablePointer<CChar> in
            let p = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBytes { raw in
                if let base = raw.baseAddress {
                    UnsafeMutableRawPointer(p).copyMemory(from: base, byteCount: bytes.count)
                }
            }
            return p
        }
        defer { storage.forEach { $0.deallocate() } }
        var argv: [UnsafePointer<CChar>?] = storage.map { UnsafePointer($0) }
        var target: UnsafeMutablePointer<CChar>?
        let length = argv.withUnsafeMutableBufferPointer { argvPtr in
            lengths.withUnsafeMutableBufferPointer { lenPtr in
                redisFormatCommandArgv(&target, Int32(arguments.count), argvPtr.baseAddress, lenPtr.baseAddress)
            }
        }
        precondition(length > 0 && target != nil, "redisFormatCommandArgv: out of memory")
        defer { redisFreeCommand(target) }
        return Array(UnsafeRawBufferPointer(start: target, count: Int(length)))
    }

    public static func format(_ arguments: String...) -> [UInt8] {
        format(arguments.map { Array($0.utf8) })
    }
}
