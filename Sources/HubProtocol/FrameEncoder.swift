import NIOCore

/// Encodes WebSocket frames (RFC 6455 §5.2).
///
/// Server frames are unmasked, so a complete frame (header and payload) can be built once into one buffer and
/// the same bytes written to every connection that should receive it.
public enum FrameEncoder {
    /// The size of a frame header for a payload of `length` bytes.
    public static func headerSize(payloadLength length: Int, masked: Bool = false) -> Int {
        let base = length <= 125 ? 2 : (length <= 0xFFFF ? 4 : 10)
        return base + (masked ? 4 : 0)
    }

    /// Writes a frame header.
    public static func writeHeader(
        into buffer: inout ByteBuffer, opcode: Opcode, fin: Bool = true, rsv1: Bool = false, payloadLength: Int,
        maskKey: UInt32? = nil
    ) {
        var b0 = opcode.rawValue
        if fin { b0 |= 0x80 }
        if rsv1 { b0 |= 0x40 }
        let maskBit: UInt8 = maskKey == nil ? 0 : 0x80
        buffer.writeInteger(b0)
        // §5.2: the minimal number of bytes is used to encode the length.
        if payloadLength <= 125 {
            buffer.writeInteger(UInt8(payloadLength) | maskBit)
        } else if payloadLength <= 0xFFFF {
            buffer.writeInteger(126 | maskBit)
            buffer.writeInteger(UInt16(payloadLength))
        } else {
            buffer.writeInteger(127 | maskBit)
            buffer.writeInteger(UInt64(payloadLength))
        }
        if let maskKey { buffer.writeInteger(maskKey) }
    }

    /// Appends a complete unmasked frame (header and payload) to `buffer`.
    public static func writeFrame(
        into buffer: inout ByteBuffer, opcode: Opcode, fin: Bool = true, rsv1: Bool = false, payload: ByteBuffer
    ) {
        buffer.reserveCapacity(minimumWritableBytes: headerSize(payloadLength: payload.readableBytes) + payload.readableBytes)
        writeHeader(into: &buffer, opcode: opcode, fin: fin, rsv1: rsv1, payloadLength: payload.readableBytes)
        var payload = payload
        buffer.writeBuffer(&payload)
    }

    /// A complete unmasked frame in a buffer of its own, ready to be written to many connections.
    public static func frame(opcode: Opcode, fin: Bool = true, rsv1: Bool = false, payload: ByteBuffer) -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(
            capacity: headerSize(payloadLength: payload.readableBytes) + payload.readableBytes)
        writeFrame(into: &buffer, opcode: opcode, fin: fin, rsv1: rsv1, payload: payload)
        return buffer
    }

    /// A close frame with `code` and `reason`.
    public static func closeFrame(code: CloseCode?, reason: String = "") -> ByteBuffer {
        frame(opcode: .close, payload: CloseFrame(code: code, reason: reason).payload())
    }

    /// Appends a masked frame, as a client sends it (§5.3).
    public static func writeMaskedFrame(
        into buffer: inout ByteBuffer, opcode: Opcode, fin: Bool = true, rsv1: Bool = false, payload: ByteBuffer,
        maskKey: UInt32
    ) {
        let count = payload.readableBytes
        writeHeader(into: &buffer, opcode: opcode, fin: fin, rsv1: rsv1, payloadLength: count, maskKey: maskKey)
        _ = payload.withUnsafeReadableBytes { src in
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { dst in
                Masking.unmask(src: src, dst: dst, count: count, mask: maskKey, offset: 0)
                return count
            }
        }
    }
}
