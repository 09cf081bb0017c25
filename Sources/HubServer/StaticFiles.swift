import Foundation
import NIOCore

/// The browser client and the demo page: read once at start from the package's resources (or `--web-root`),
/// then served from memory.
struct StaticFiles: Sendable {
    struct File: Sendable {
        let body: ByteBuffer
        let contentType: String
    }

    private let files: [String: File]

    /// URL path → file name in the web folder.
    static let routes: [String: String] = [
        "/client/hub.js": "hub.js",
        "/demo": "demo.html", "/demo/": "demo.html", "/demo/demo.html": "demo.html",
        "/demo/demo.js": "demo.js", "/demo/demo.css": "demo.css",
    ]

    init(webRoot: String?) throws {
        let root: URL
        if let webRoot {
            root = URL(fileURLWithPath: webRoot)
        } else if let bundled = Bundle.module.url(forResource: "Web", withExtension: nil) {
            root = bundled
        } else {
            throw ConfigurationError(setting: "web-root", message: "the bundled web files are missing; pass --web-root")
        }
        var files: [String: File] = [:]
        for (path, name) in Self.routes {
            let url = root.appendingPathComponent(name)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                throw ConfigurationError(setting: "web-root", message: "\(url.path) is missing")
            }
            let type: String
            switch url.pathExtension {
            case "js": type = "text/javascript; charset=utf-8"
            case "css": type = "text/css; charset=utf-8"
            default: type = "text/html; charset=utf-8"
            }
            files[path] = File(body: ByteBuffer(bytes: data), contentType: type)
        }
        self.files = files
    }

    func file(for path: String) -> File? { files[path] }
}
