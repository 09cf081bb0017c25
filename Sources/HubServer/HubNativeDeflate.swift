import HubCore
import HubNative
import NIOCore

enum HubNativeDeflate {
    /// Compresses a constant message once at start-up (a deflater of its own, used only here).
    static func shared(_ message: ByteBuffer, into output: inout ByteBuffer) {
        Deflater(windowBits: EncodedEvent.sharedDeflateWindowBits).compressMessage(message, into: &output)
    }
}
