import HubNative
import HubProtocol
import NIOCore
import XCTest

enum Chunking: CaseIterable {
    case whole, byteByByte, threeBytes
}

/// Runs `bytes` through a reader in the given chunking, accumulating as a channel handler would.
func readAll(_ bytes: [UInt8], chunking: Chunking, maxFrameSize: Int = 1 << 20, maxMessageSize: Int = 1 << 20,
    expectMasked: Bool = true, deflate: Bool = false) -> (messages: [WebSocketMessage], error: ProtocolError?)
{
    var reader = WebSocketReader(maxFrameSize: maxFrameSize, maxMessageSize: maxMessageSize,
        expectMasked: expectMasked, deflate: deflate)
    var pending = ByteBuffer()
    var messages: [WebSocketMessage] = []
    let step: Int
    switch chunking {
    case .whole: step = max(bytes.count, 1)
    case .byteByByte: step = 1
    case .threeBytes: step = 3
    }
    var i = 0
    repeat {
        let end = min(i + step, bytes.count)
        pending.writeBytes(bytes[i..<end])
        i = end
        do {
            while let m = try reader.next(&pending) { messages.append(m) }
        } catch {
            return (messages, error)
        }
    } while i < bytes.count
    return (messages, nil)
}

func masked(_ opcode: UInt8, _ payload: [UInt8], fin: Bool = true, rsv1: Bool = false, key: UInt32 = 0x37FA_213D)
    -> [UInt8]
{
    var b = ByteBuffer()
    var first = opcode
    if fin { first |= 0x80 }
    if rsv1 { first |= 0x40 }
    // Write through the encoder for standard lengths; opcode may be reserved, so patch byte 0 afterwards.
    FrameEncoder.writeMaskedFrame(into: &b, opcode: .binary, payload: ByteBuffer(bytes: payload), maskKey: key)
    var bytes = Array(b.readableBytesView)
    bytes[0] = first
    return bytes
}

func text(_ s: String) -> WebSocketMessage { .text(ByteBuffer(string: s)) }
func binary(_ b: [UInt8]) -> WebSocketMessage { .binary(ByteBuffer(bytes: b)) }
