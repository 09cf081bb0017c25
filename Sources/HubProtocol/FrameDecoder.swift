import NIOCore

/// The header of a text, binary or continuation frame.
public struct DataFrameHeader: Equatable, Sendable {
    public var fin: Bool
    /// RFC 7692 §6: set on the first frame of a compressed message.
    public var rsv1: Bool
    public var opcode: Opcode
    public var length: Int
}

/// A complete control frame (close, ping, pong); at most 125 payload bytes, never fragmented.
public struct ControlFrame: Equatable, Sendable {
    public var opcode: Opcode
    public var payload: ByteBuffer
}

/// An incremental RFC 6455 frame decoder: a value-type state machine that takes bytes in any chunking (one byte at
/// a time included) and returns one event per step. It does no I/O.
///
/// Data frames are streamed: a header event, payload chunks as they arrive (already unmasked), then an end event,
/// so that a large frame is never buffered twice and a text message can be validated as it arrives. Control frames
/// (at most 125 bytes) are returned whole. Frame-sequence rules (§5.4) are enforced here too.
public struct FrameDecoder: Sendable {
    public struct Configuration: Sendable {
        /// Largest accepted frame payload; larger frames fail with 1009 before any payload is buffered.
        public var maxFrameSize: Int
        /// True on the server: client frames must be masked (§5.1). False on a client: server frames must not be.
        public var expectMasked: Bool
        /// True when permessage-deflate was negotiated, which gives RSV1 a meaning.
        public var allowRSV1: Bool

        public init(maxFrameSize: Int, expectMasked: Bool = true, allowRSV1: Bool = false) {
            self.maxFrameSize = maxFrameSize
            self.expectMasked = expectMasked
            self.allowRSV1 = allowRSV1
        }
    }

    public enum Event: Equatable, Sendable {
        case control(ControlFrame)
        case dataHeader(DataFrameHeader)
        /// Unmasked payload bytes of the current data frame (never empty).
        case dataPayload(ByteBuffer)
        /// The current data frame is complete; `fin` repeats the header's FIN bit.
        case dataEnd(fin: Bool)
    }

    public enum ParseResult: Equatable, Sendable {
        /// Nothing more can be decoded until more bytes arrive.
        case needMoreData
        case event(Event)
    }

    private enum State: Sendable {
        /// Waiting for a frame header.
        case header
        /// Inside a data frame's payload.
        case payload(remaining: Int, mask: UInt32?, maskOffset: Int, fin: Bool)
        /// A protocol error happened; the connection must be failed.
        case failed(ProtocolError)
    }

    public var configuration: Configuration
    private var state: State = .header
    /// True between the first and the final frame of a fragmented message.
    private var inFragmentedMessage = false

    public init(configuration: Configuration) {
        self.configuration = configuration
    }

    /// Decodes the next event from the front of `buffer`, consuming what it used.
    ///
    /// Errors are detected as soon as the bytes that show them arrive: the first two header bytes are checked
    /// before the rest of the header, and the length before any payload.
    public mutating func next(_ buffer: inout ByteBuffer) throws(ProtocolError) -> ParseResult {
        switch state {
        case .failed(let error):
            throw error
        case .header:
            do {
                return try parseHeader(&buffer)
            } catch {
                state = .failed(error)
                throw error
            }
        case .payload(let remaining, let mask, let maskOffset, let fin):
            if remaining == 0 {
                state = .header
                if fin { inFragmentedMessage = false }
                return .event(.dataEnd(fin: fin))
            }
            let n = min(remaining, buffer.readableBytes)
            if n == 0 { return .needMoreData }
            let chunk = readUnmasked(&buffer, count: n, mask: mask, maskOffset: maskOffset)
            state = .payload(remaining: remaining - n, mask: mask, maskOffset: (maskOffset + n) & 3, fin: fin)
            return .event(.dataPayload(chunk))
        }
    }

    private mutating func parseHeader(_ buffer: inout ByteBuffer) throws(ProtocolError) -> ParseResult {
        guard buffer.readableBytes >= 2,
            let b0 = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self),
            let b1 = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self)
        else { return .needMoreData }

        let fin = b0 & 0x80 != 0
        let rsv1 = b0 & 0x40 != 0
        guard b0 & 0x30 == 0 else { throw .reservedBitsSet }
        guard let opcode = Opcode(rawValue: b0 & 0x0F) else { throw .reservedOpcode(b0 & 0x0F) }
        let masked = b1 & 0x80 != 0
        if masked != configuration.expectMasked {
            throw configuration.expectMasked ? .unmaskedFrame : .maskedFrame
        }
        let length7 = Int(b1 & 0x7F)

        if opcode.isControl {
            // §5.5: control frames are at most 125 bytes (so the 7-bit length) and never fragmented.
            guard fin else { throw .fragmentedControlFrame }
            guard length7 <= 125 else { throw .controlFrameTooLong }
            // RFC 7692 §6.1: RSV1 is only for data messages.
            guard !rsv1 else { throw .reservedBitsSet }
        } else {
            if opcode == .continuation {
                guard inFragmentedMessage else { throw .continuationWithoutStart }
                // RFC 7692 §6.1: RSV1 is set on the first frame of a message only.
                guard !rsv1 else { throw .reservedBitsSet }
            } else {
                guard !inFragmentedMessage else { throw .dataFrameInsideFragmentedMessage }
                guard !rsv1 || configuration.allowRSV1 else { throw .reservedBitsSet }
            }
        }

        let lengthBytes = length7 == 126 ? 2 : (length7 == 127 ? 8 : 0)
        let headerSize = 2 + lengthBytes + (masked ? 4 : 0)
        guard buffer.readableBytes >= headerSize else {
            // Check what can be checked of a 64-bit length already: its top bit (§5.2) fails at once.
            if lengthBytes == 8, buffer.readableBytes >= 3,
                let top = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt8.self), top & 0x80 != 0
            {
                throw .invalidLength
            }
            return .needMoreData
        }

        var length: Int
        switch lengthBytes {
        case 2:
            let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt16.self)!
            // §5.2: "the minimal number of bytes MUST be used to encode the length".
            guard l >= 126 else { throw .invalidLength }
            length = Int(l)
        case 8:
            let l = buffer.getInteger(at: buffer.readerIndex + 2, as: UInt64.self)!
            guard l & (1 << 63) == 0, l > 0xFFFF else { throw .invalidLength }
            guard l <= UInt64(configuration.maxFrameSize) else {
                throw .frameTooLarge(limit: configuration.maxFrameSize)
            }
            length = Int(l)
        default:
            length = length7
        }
        guard length <= configuration.maxFrameSize else { throw .frameTooLarge(limit: configuration.maxFrameSize) }

        let mask: UInt32? =
            masked ? buffer.getInteger(at: buffer.readerIndex + 2 + lengthBytes, as: UInt32.self) : nil

        if opcode.isControl {
            guard buffer.readableBytes >= headerSize + length else { return .needMoreData }
            buffer.moveReaderIndex(forwardBy: headerSize)
            let payload = readUnmasked(&buffer, count: length, mask: mask, maskOffset: 0)
            return .event(.control(ControlFrame(opcode: opcode, payload: payload)))
        }

        buffer.moveReaderIndex(forwardBy: headerSize)
        if opcode != .continuation { inFragmentedMessage = true }
        state = .payload(remaining: length, mask: mask, maskOffset: 0, fin: fin)
        return .event(.dataHeader(DataFrameHeader(fin: fin, rsv1: rsv1, opcode: opcode, length: length)))
    }

    /// Reads `count` bytes, removing the mask (§5.3) with the key rotated by `maskOffset`.
    private func readUnmasked(_ buffer: inout ByteBuffer, count: Int, mask: UInt32?, maskOffset: Int) -> ByteBuffer {
        guard let mask else { return buffer.readSlice(length: count)! }
        var out = ByteBufferAllocator().buffer(capacity: count)
        _ = buffer.withUnsafeReadableBytes { src in
            out.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dst in
                Masking.unmask(src: src, dst: dst, count: count, mask: mask, offset: maskOffset)
                return count
            }
        }
        buffer.moveReaderIndex(forwardBy: count)
        return out
    }
}

/// §5.3 masking: `octet i XOR key[(i + offset) % 4]`, eight bytes at a time.
enum Masking {
    /// `mask` is the key as read in network order (the first key byte is the most significant).
    static func unmask(src: UnsafeRawBufferPointer, dst: UnsafeMutableRawBufferPointer, count: Int, mask: UInt32,
        offset: Int)
    {
        let keyBytes: (UInt8, UInt8, UInt8, UInt8) = (
            UInt8(mask >> 24), UInt8(truncatingIfNeeded: mask >> 16), UInt8(truncatingIfNeeded: mask >> 8),
            UInt8(truncatingIfNeeded: mask)
        )
        let key = [keyBytes.0, keyBytes.1, keyBytes.2, keyBytes.3]
        // A little-endian word whose byte j is key[(offset + j) % 4].
        var word: UInt64 = 0
        for j in 0..<8 { word |= UInt64(key[(offset + j) & 3]) << UInt64(8 * j) }
        var i = 0
        while i + 8 <= count {
            let v = src.loadUnaligned(fromByteOffset: i, as: UInt64.self).littleEndian ^ word
            dst.storeBytes(of: v.littleEndian, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        while i < count {
            dst[i] = src[i] ^ key[(offset + i) & 3]
            i += 1
        }
    }
}
