#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import ArgumentParser

/// `hub serve --config FILE`: one `name = value` per line, where `name` is a `serve` option's long name without the
/// dashes (`port = 8080`, `redis = redis://10.0.0.5:6379/0`, `allowed-origin = https://a.example, https://b.example`).
/// `#` starts a comment line; blank lines are skipped; a value may be wrapped in double quotes.
struct ConfigFile {
    struct Entry {
        var value: String
        var line: Int
    }

    let path: String
    let entries: [String: Entry]

    init(path: String, text: String, knownNames: Set<String>) throws {
        self.path = path
        var entries: [String: Entry] = [:]
        // Lines end with LF, CRLF or CR (in Swift "\r\n" is one Character, so split on every newline).
        for (index, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = index + 1
            let content = Self.trimmed(rawLine)
            if content.isEmpty || content.hasPrefix("#") { continue }
            guard let equals = content.firstIndex(of: "=") else {
                throw ValidationError("config file \(path) line \(line): expected name = value")
            }
            let name = Self.trimmed(content[..<equals])
            var value = Self.trimmed(content[content.index(after: equals)...])
            if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
                value = String(value.dropFirst().dropLast())
            }
            guard knownNames.contains(name) else {
                throw ValidationError("config file \(path) line \(line): unknown setting '\(name)'")
            }
            if let earlier = entries[name] {
                throw ValidationError("config file \(path) line \(line): '\(name)' is already set on line \(earlier.line)")
            }
            entries[name] = Entry(value: value, line: line)
        }
        self.entries = entries
    }

    /// Without leading and trailing spaces and tabs.
    private static func trimmed<S: StringProtocol>(_ s: S) -> String {
        var sub = Substring(s)
        while let c = sub.first, c == " " || c == "\t" { sub.removeFirst() }
        while let c = sub.last, c == " " || c == "\t" { sub.removeLast() }
        return String(sub)
    }

    static func load(path: String, knownNames: Set<String>) throws -> ConfigFile {
        guard let file = fopen(path, "r") else {
            throw ValidationError("config file \(path) cannot be read: \(String(cString: strerror(errno)))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n == 0 { break }
            bytes += chunk[..<n]
            if bytes.count > 1 << 20 { throw ValidationError("config file \(path) is larger than 1 MiB") }
        }
        guard let text = String(validating: bytes, as: UTF8.self) else {
            throw ValidationError("config file \(path) is not UTF-8")
        }
        return try ConfigFile(path: path, text: text, knownNames: knownNames)
    }
}

/// Where `serve` settings come from, in one precedence order: the flag, then the `HUB_*` environment variable, then
/// the config file, then the default.
struct SettingSources {
    let file: ConfigFile?

    /// The config-file name of the setting whose environment variable is `env`: `HUB_MAX_FRAME_SIZE` → `max-frame-size`.
    static func fileName(env: String) -> String {
        switch env {
        case "HUB_REDIS_URL": return "redis"
        case "HUB_ALLOWED_ORIGINS": return "allowed-origin"
        default: return String(env.dropFirst(4)).lowercased().split(separator: "_").joined(separator: "-")
        }
    }

    /// Where a setting comes from: 3 a flag, 2 the environment, 1 the file, 0 nowhere (the default).
    func rank<T>(_ flag: T?, env: String) -> Int {
        if flag != nil { return 3 }
        if Environment.value(env) != nil { return 2 }
        if let file, file.entries[Self.fileName(env: env)] != nil { return 1 }
        return 0
    }

    func value<T>(_ flag: T?, env: String, parse: (String) -> T?) throws -> T? {
        if let flag { return flag }
        if let raw = Environment.value(env) {
            guard let value = parse(raw) else {
                throw ValidationError("environment variable \(env)='\(raw)' is not a valid value")
            }
            return value
        }
        let name = Self.fileName(env: env)
        if let file, let entry = file.entries[name] {
            guard let value = parse(entry.value) else {
                throw ValidationError("config file \(file.path) line \(entry.line): \(name) = '\(entry.value)' is not a valid value")
            }
            return value
        }
        return nil
    }
}
