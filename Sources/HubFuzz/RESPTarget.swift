import HubNative
import NIOCore

/// Redis replies through `RESPReader` (hiredis's reader), fed as `RedisConnection` feeds it: each read's bytes,
/// then every complete reply.
///
/// Input: a chunking seed, then the bytes from the server. Read whole and in the chosen chunking, the replies and
/// the error must be the same, and no reply may hold more than its bytes could carry.
enum RESPTarget {
    static func run(_ data: [UInt8]) {
        var input = FuzzInput(data)
        let seed = input.byte()
        let wire = Array(input.rest)
        let whole = read(wire, ranges: [0..<wire.count])
        let chunked = read(wire, ranges: Chunking.ranges(count: wire.count, seed: seed))
        require(whole.replies == chunked.replies,
            "\(whole.replies.count) replies read whole, \(chunked.replies.count) in chunks")
        require(whole.error == chunked.error,
            "error \(String(describing: whole.error)) whole, \(String(describing: chunked.error)) in chunks")
        // Every value takes at least three bytes on the wire (a type byte and CRLF), besides its text: a byte per
        // character at least (status and error lines are decoded as UTF-8, each invalid byte becoming U+FFFD).
        let cost = whole.replies.reduce(0) { $0 + minimumWireBytes($1) }
        require(cost <= wire.count, "replies need \(cost) bytes, the input has \(wire.count)")
    }

    static func read(_ wire: [UInt8], ranges: [Range<Int>]) -> (replies: [RESPValue], error: String?) {
        let reader = RESPReader()
        var replies: [RESPValue] = []
        for range in ranges {
            let buffer = ByteBuffer(bytes: wire[range])
            do {
                try buffer.withUnsafeReadableBytes { try reader.feed($0) }
                while let reply = try reader.next() { replies.append(reply) }
            } catch {
                return (replies, (error as? RESPReader.ProtocolError)?.message ?? "\(error)")
            }
        }
        return (replies, nil)
    }

    static func minimumWireBytes(_ value: RESPValue) -> Int {
        switch value {
        case .status(let s), .error(let s): return 3 + s.unicodeScalars.count
        case .bulk(let b): return 3 + b.count
        case .integer, .null: return 3
        case .array(let items): return items.reduce(3) { $0 + minimumWireBytes($1) }
        }
    }
}
