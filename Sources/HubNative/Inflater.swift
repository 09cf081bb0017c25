import CHubZlib
import NIOCore

/// A bounded raw-inflate decompressor for permessage-deflate (RFC 7692).
///
/// Input arrives frame by frame; output is refused past a caller-given limit, so a small compressed message
/// cannot expand into unbounded memory (an "inflate bomb"). With `client_no_context_takeover` the hub resets the
/// stream after each message, so one inflater can be shared by every connection on an event loop.
public final class Inflater {
    public enum Error: Swift.Error, Equatable, Sendable {
        /// The inflated message would exceed the limit.
        case limitExceeded
        /// The compressed data is not valid deflate.
        case corrupt(String)
    }

    private let stream: UnsafeMutablePointer<z_stream>
    /// Set when the sender ended the deflate stream with a final block (RFC 7692 §7.2.3.4 allows BFINAL).
    private var streamEnded = false
    private static let tail: [UInt8] = [0x00, 0x00, 0xFF, 0xFF]

    /// - Parameter windowBits: 8...15; a window of 15 inflates data compressed with any smaller window.
    public init(windowBits: Int = 15) {
        precondition((8...15).contains(windowBits), "raw inflate window bits must be 8...15")
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = chub_inflateInit2(stream, -Int32(windowBits))
        precondition(rc == Z_OK, "inflateInit2 failed: \(rc)")
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Inflates one chunk of a compressed message and appends the result to `output`.
    /// - Parameter limit: the most bytes this call may append.
    /// - Returns: the number of bytes appended.
    @discardableResult
    public func inflate(_ input: UnsafeRawBufferPointer, into output: inout ByteBuffer, limit: Int) throws(Error) -> Int {
        // After a final block the rest of the message is not deflate data; like zlib's own tools, ignore it.
        if streamEnded { return 0 }
        stream.pointee.next_in = UnsafeMutablePointer(
            mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = UInt32(input.count)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.next_out = nil
        }
        var total = 0
        while true {
            // Offer zlib one byte more than the limit allows: if it uses it, the limit is exceeded.
            let room = min(max(limit - total, 0) + 1, 64 * 1024)
            var rc: Int32 = Z_OK
            let written = output.writeWithUnsafeMutableBytes(minimumWritableBytes: room) { out in
                stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.pointee.avail_out = UInt32(room)
                rc = CHubZlib.inflate(stream, Z_SYNC_FLUSH)
                return room - Int(stream.pointee.avail_out)
            }
            total += written
            if total > limit {
                output.moveWriterIndex(to: output.writerIndex - written)
                throw .limitExceeded
            }
            switch rc {
            case Z_OK:
                if stream.pointee.avail_in == 0 && stream.pointee.avail_out > 0 { return total }
            case Z_BUF_ERROR:
                // No progress possible: all input consumed (or none given).
                return total
            case Z_STREAM_END:
                // A final block (BFINAL=1) ends the deflate stream until the message ends.
                streamEnded = true
                return total
            default:
                let message = stream.pointee.msg.map { String(cString: $0) } ?? "inflate error \(rc)"
                throw .corrupt(message)
            }
        }
    }

    /// Ends a message: feeds the `00 00 ff ff` that RFC 7692 §7.2.2 says the sender removed, then resets the stream
    /// when `resetContext` is true (client_no_context_takeover).
    @discardableResult
    public func finishMessage(into output: inout ByteBuffer, limit: Int, resetContext: Bool) throws(Error) -> Int {
        var appended = 0
        if !streamEnded {
            let result = Self.tail.withUnsafeBytes { tail in
                Result { () throws(Error) -> Int in try inflate(tail, into: &output, limit: limit) }
            }
            appended = try result.get()
        }
        if resetContext || streamEnded { reset() }
        return appended
    }

    /// Discards any partial message (after an error), so the inflater can be reused.
    public func reset() {
        inflateReset(stream)
        streamEnded = false
    }
}
