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
///
/// hiredis allocates a slot for every element of an array as soon as the array's header arrives, so a header alone
/// (`*2147483647\r\n`, 14 bytes) would allocate 16 GiB, and nested headers could multiply that. The reader counts
/// the slots announced and not yet filled, over every array in flight, and refuses a header that would take the
/// count past `maxPendingElements`: pending slots never cost more than 8 bytes times that.
public final class RESPReader {
    public struct ProtocolError: Error, Equatable, Sendable {
        public let message: String
    }

    /// The default bound on pending array elements: far above any reply the hub asks for (a history read is one
    /// element per event, and an execution keeps at most `maxEventsPerExecution`), 8 MiB of slots at most.
    public static let defaultMaxPendingElements = 1 << 20

    public let maxPendingElements: Int
    private let reader: UnsafeMutablePointer<redisReader>
    private let functions: UnsafeMutablePointer<redisReplyObjectFunctions>
    private let budget: ElementBudget

    public init(maxPendingElements: Int = RESPReader.defaultMaxPendingElements) {
        guard let r = redisReaderCreate() else { fatalError("redisReaderCreate: out of memory") }
        reader = r
        self.maxPendingElements = maxPendingElements
        // hiredis's own object functions build the replies; these wrappers only count slots on the way.
        budget = ElementBudget(limit: maxPendingElements, defaults: r.pointee.fn.pointee)
        functions = .allocate(capacity: 1)
        functions.initialize(to: redisReplyObjectFunctions(
            createString: { task, str, len in
                let budget = ElementBudget.of(task)
                budget.filled(task)
                return budget.defaults.createString?(task, str, len)
            },
            createArray: { task, elements in
                let budget = ElementBudget.of(task)
                budget.filled(task)
                guard budget.admit(elements) else { return nil }
                return budget.defaults.createArray?(task, elements)
            },
            createInteger: { task, value in
                let budget = ElementBudget.of(task)
                budget.filled(task)
                return budget.defaults.createInteger?(task, value)
            },
            createNil: { task in
                let budget = ElementBudget.of(task)
                budget.filled(task)
                return budget.defaults.createNil?(task)
            },
            freeObject: r.pointee.fn.pointee.freeObject))
        r.pointee.fn = functions
        // hiredis hands the reader's privdata to every read task.
        r.pointee.privdata = Unmanaged.passUnretained(budget).toOpaque()
    }

    deinit {
        redisReaderFree(reader)
        functions.deinitialize(count: 1)
        functions.deallocate()
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
        // A refused header reaches hiredis as an allocation failure ("Out of memory"); say what it was.
        if let refused = budget.refused {
            return "Protocol error: array of \(refused) elements, more than the \(maxPendingElements) pending elements a reply may have"
        }
        return withUnsafeBytes(of: reader.pointee.errstr) { raw in
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

/// The count of array slots hiredis has allocated and not yet filled, kept through its object functions.
private final class ElementBudget {
    let limit: Int
    let defaults: redisReplyObjectFunctions
    var pending = 0
    /// The element count of the header that was refused.
    var refused: Int?

    init(limit: Int, defaults: redisReplyObjectFunctions) {
        self.limit = limit
        self.defaults = defaults
    }

    static func of(_ task: UnsafePointer<redisReadTask>?) -> ElementBudget {
        Unmanaged<ElementBudget>.fromOpaque(task!.pointee.privdata!).takeUnretainedValue()
    }

    /// A value inside an array fills one of its slots.
    func filled(_ task: UnsafePointer<redisReadTask>?) {
        if task?.pointee.parent != nil { pending -= 1 }
    }

    /// Whether an array of `elements` may be allocated (hiredis passes -1, a null array, to createNil instead).
    func admit(_ elements: Int32) -> Bool {
        guard elements >= 0, pending + Int(elements) <= limit else {
            refused = Int(elements)
            return false
        }
        pending += Int(elements)
        return true
    }
}

/// Redis commands encoded by hiredis's `redisFormatCommandArgv` (binary-safe arguments).
public enum RESPCommand {
    public static func format(_ arguments: [[UInt8]]) -> [UInt8] {
        withFormatted(arguments) { Array($0) }
    }

    /// Hands `body` the command as hiredis formats it (valid during the call only). The arguments are laid end to end
    /// in one allocation for the call, so that hiredis reads them from there.
    public static func withFormatted<R>(_ arguments: [[UInt8]], _ body: (UnsafeRawBufferPointer) -> R) -> R {
        precondition(!arguments.isEmpty, "a command needs a name")
        var lengths = arguments.map { $0.count }
        let total = lengths.reduce(0, +)
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: max(total, 1)) { joined in
            var argv: [UnsafePointer<CChar>?] = []
            argv.reserveCapacity(arguments.count)
            var offset = 0
            for bytes in arguments {
                bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress {
                        UnsafeMutableRawPointer(joined.baseAddress! + offset).copyMemory(from: base, byteCount: raw.count)
                    }
                }
                argv.append(UnsafePointer(joined.baseAddress! + offset))
                offset += bytes.count
            }
            var target: UnsafeMutablePointer<CChar>?
            let length = argv.withUnsafeMutableBufferPointer { argvPtr in
                lengths.withUnsafeMutableBufferPointer { lenPtr in
                    redisFormatCommandArgv(&target, Int32(arguments.count), argvPtr.baseAddress, lenPtr.baseAddress)
                }
            }
            precondition(length > 0 && target != nil, "redisFormatCommandArgv: out of memory")
            defer { redisFreeCommand(target) }
            return body(UnsafeRawBufferPointer(start: target, count: Int(length)))
        }
    }

    public static func format(_ arguments: String...) -> [UInt8] {
        format(arguments.map { Array($0.utf8) })
    }
}
