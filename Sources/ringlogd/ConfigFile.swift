import ArgumentParser
import Foundation
import Yams

/// `--config FILE`: a YAML mapping whose keys are ringlogd's option names. Its options are placed
/// before the command line's, so the command line wins.
enum ConfigFile {
    struct Problem: Error, CustomStringConvertible {
        let description: String
    }

    /// The command line with `--config FILE` replaced by the options the file holds (placed
    /// first, so the command line wins), and which options came from where, so a bad value can be
    /// traced to its source.
    struct Expanded {
        var arguments: [String]
        var commandLine: [String]
        var path: String?
        var fileKeys: Set<String>

        /// Where the value of option `name` (without dashes) came from, in words.
        func source(of name: String) -> String {
            if commandLine.contains(where: { $0 == "--\(name)" || $0.hasPrefix("--\(name)=") }) { return "on the command line" }
            if let path, fileKeys.contains(name) { return "in the config file \(path)" }
            return "by default"
        }
    }

    static func expand(_ arguments: [String]) throws -> Expanded {
        var remaining = arguments
        var path: String?
        if let index = remaining.firstIndex(of: "--config"), index + 1 < remaining.count {
            path = remaining[index + 1]
            remaining.removeSubrange(index...(index + 1))
        } else if let index = remaining.firstIndex(where: { $0.hasPrefix("--config=") }) {
            path = String(remaining[index].dropFirst("--config=".count))
            remaining.remove(at: index)
        }
        guard let path else { return Expanded(arguments: remaining, commandLine: remaining, path: nil, fileKeys: []) }
        let fromFile = try options(fromFile: path)
        let keys = Set(stride(from: 0, to: fromFile.count, by: 2).map { String(fromFile[$0].dropFirst(2)) })
        return Expanded(arguments: fromFile + remaining, commandLine: remaining, path: path, fileKeys: keys)
    }

    /// The file's settings as `--key value` pairs, each checked on its own so a problem names its key.
    static func options(fromFile path: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Problem(description: "cannot read the config file \(path)")
        }
        let document: Any?
        do { document = try Yams.load(yaml: text) } catch {
            throw Problem(description: "config file \(path) is not valid YAML: \(error)")
        }
        guard let document else { return [] }
        guard let mapping = document as? [String: Any] else {
            throw Problem(description: "config file \(path) must be a mapping of option names to values (data-dir: /var/lib/ringlog)")
        }
        let known = optionNames()
        var options: [String] = []
        for key in mapping.keys.sorted() {
            guard known.contains(key) else {
                throw Problem(description: "config file \(path): unknown key '\(key)'; known keys: \(known.sorted().joined(separator: ", "))")
            }
            let value: String
            switch mapping[key] {
            case let text as String: value = text
            case let number as Int: value = String(number)
            case let number as Double: value = String(number)
            case let flag as Bool: value = String(flag)
            default: throw Problem(description: "config file \(path): key '\(key)' must have a single value")
            }
            do {
                _ = try RingLogDaemon.parse(["--\(key)", value])
            } catch {
                throw Problem(description: "config file \(path): key '\(key)' has a bad value '\(value)': \(RingLogDaemon.message(for: error))")
            }
            options += ["--\(key)", value]
        }
        return options
    }

    /// Every option name (kebab-case, as on the command line) except `config` itself.
    static func optionNames() -> Set<String> {
        let labels = Mirror(reflecting: RingLogDaemon()).children.compactMap(\.label)
        return Set(labels.map { kebabCase(String($0.drop { $0 == "_" })) }.filter { $0 != "config" })
    }

    static func kebabCase(_ camel: String) -> String {
        var out = ""
        for character in camel {
            if character.isUppercase {
                out += "-" + character.lowercased()
            } else {
                out.append(character)
            }
        }
        return out
    }
}
