import NIOCore

extension ChannelHandlerContext {
    /// Writes `bytes` (not flushed): straight to the channel's `core` when the caller is the pipeline's only handler
    /// and holds it (the pipeline's head would hand the write there too), otherwise through the pipeline.
    @inline(__always)
    func write(_ bytes: ByteBuffer, core: ChannelCore?) {
        if let core { core.write0(NIOAny(bytes), promise: nil) } else { write(NIOAny(bytes), promise: nil) }
    }

    /// Flushes through `core` when given (see `write(_:core:)`), otherwise through the pipeline.
    @inline(__always)
    func flush(core: ChannelCore?) {
        if let core { core.flush0() } else { flush() }
    }
}
