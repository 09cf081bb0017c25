import CHubZlib
import NIOCore

/// A raw-deflate compressor (RFC 1951 without zlib header) for permessage-deflate (RFC 7692).
///
/// The hub compresses every message independently (`server_no_context_takeover`), so one compressed frame can be
/// written to every subscriber. The zlib stream lives at a stable heap address because zlib keeps a pointer back
/// to it; it is freed in `deinit`.
public final class Deflater {
    private let stream: UnsafeMutablePointer<z_stream>

    /// - Parameters:
    ///   - windowBits: LZ77 window, 9...15. (zlib refuses 8 for raw deflate, so the hub never agrees to 8.)
    ///   - level: compression level 0...9; the default favours speed, which is what a fan-out needs.
    ///   - memoryLevel: zlib memLevel 1...9.
    public init(windowBits: Int = 15, level: Int = 1, memoryLevel: Int = 8) {
        precondition((9...15).contains(windowBits), "raw deflate window bits must be 9...15")
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let rc = chub_deflateInit2(stream, Int32(level), -Int32(windowBits), Int32(memoryLevel), Z_DEFAULT_STRATEGY)
        precondition(rc == Z_OK, "deflateInit2 failed: \(rc)")
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses one whole message and appends it to `output`, as RFC 7692 §7.2.1 prescribes: a sync flush,
    /// then the trailing `00 00 ff ff` removed. The stream is reset afterwards (no context takeover).
    public func compressMessage(_ input: ByteBuffer, into output: inout ByteBuffer) {
        input.withUnsafeReadableBytes { compressMessage($0, into: &output) }
    }

    /// Compresses one whole message from raw bytes; see `compressMessage(_:into:)`.
    public func compressMessage(_ input: UnsafeRawBufferPointer, into output: inout ByteBuffer) {
        let start = output.writerIndex
        stream.pointee.next_in = UnsafeMutablePointer(
            mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = UInt32(input.count)
        // deflateBound is for a finished stream; a sync flush adds a few bytes, so leave room for them.
        var capacity = Int(deflateBound(stream, UInt(input.count))) + 16
        while true {
            var rc: Int32 = Z_OK
            output.writeWithUnsafeMutableBytes(minimumWritableBytes: capacity) { out in
                stream.pointee.next_out = out.baseAddress!.assumingMemoryBound(to: Bytef.self)
                stream.pointee.avail_out = UInt32(min(out.count, Int(UInt32.max)))
                let before = stream.pointee.avail_out
                rc = deflate(stream, Z_SYNC_FLUSH)
                return Int(before - stream.pointee.avail_out)
            }
            precondition(rc == Z_OK || rc == Z_BUF_ERROR, "deflate failed: \(rc)")
            // Done when all input is consumed and zlib did not fill the output (so the flush is complete).
            if stream.pointee.avail_in == 0 && stream.pointee.avail_out > 0 { break }
            capacity = 4096
        }
        stream.pointee.next_in = nil
        stream.pointee.next_out = nil
        deflateReset(stream)
        // RFC 7692 §7.2.1: remove the 4 octets 00 00 ff ff that end the sync flush.
        let produced = output.writerIndex - start
        if produced >= 4,
            output.getBytes(at: output.writerIndex - 4, length: 4) == [0x00, 0x00, 0xFF, 0xFF]
        {
            output.moveWriterIndex(to: output.writerIndex - 4)
        }
    }
}
