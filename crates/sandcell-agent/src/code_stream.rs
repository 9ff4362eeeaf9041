//! The `code` of a `python` tool call, read out of its JSON arguments while they are
//! still arriving, so that the code can be shown as the model writes it.

/// Collects argument deltas and hands out the code decoded so far.
#[derive(Debug, Default)]
pub(crate) struct CodeStream {
    arguments: String,
    /// Characters of code already handed out.
    shown: usize,
}

impl CodeStream {
    /// Adds a piece of the arguments; returns the code it completed (may be empty).
    pub(crate) fn push(&mut self, delta: &str) -> String {
        self.arguments.push_str(delta);
        // Decoding from the start each time keeps this simple; code is a few KiB.
        let code = decoded_prefix(&self.arguments);
        let new: String = code.chars().skip(self.shown).collect();
        self.shown += new.chars().count();
        new
    }
}

/// The part of the `"code"` string value that can already be decoded.
fn decoded_prefix(arguments: &str) -> String {
    let Some(key) = arguments.find("\"code\"") else {
        return String::new();
    };
    let rest = arguments[key + 6..].trim_start();
    let Some(rest) = rest.strip_prefix(':') else {
        return String::new();
    };
    let Some(value) = rest.trim_start().strip_prefix('"') else {
        return String::new();
    };
    let mut code = String::new();
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => break,
            '\\' => {
                let Some(escape) = chars.next() else { break };
                let decoded = match escape {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let Some(unit) = u16::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                        else {
                            break; // the escape is not complete yet
                        };
                        match decode_unit(unit, &mut chars) {
                            Some(c) => c,
                            None => break,
                        }
                    }
                    other => other, // \" \\ \/
                };
                code.push(decoded);
            }
            c => code.push(c),
        }
    }
    code
}

/// A `\uXXXX` unit, reading the low half of a surrogate pair when there is one.
fn decode_unit(unit: u16, chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<char> {
    if !(0xD800..0xDC00).contains(&unit) {
        return Some(char::from_u32(u32::from(unit)).unwrap_or('\u{fffd}'));
    }
    let rest: String = chars.by_ref().take(6).collect();
    let low = rest
        .strip_prefix("\\u")
        .filter(|hex| hex.len() == 4)
        .and_then(|hex| u16::from_str_radix(hex, 16).ok())?;
    Some(
        char::decode_utf16([unit, low])
            .next()?
            .unwrap_or('\u{fffd}'),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_comes_out_as_the_arguments_arrive_whatever_the_cuts() {
        let arguments = serde_json::json!({"code": "print(\"héllo\\n\")\nx = '😀'\t# done"})
            .to_string()
            .replace('😀', "\\ud83d\\ude00");
        let expected = "print(\"héllo\\n\")\nx = '😀'\t# done";
        for size in 1..8 {
            let mut stream = CodeStream::default();
            let chars: Vec<char> = arguments.chars().collect();
            let shown: String = chars
                .chunks(size)
                .map(|piece| stream.push(&piece.iter().collect::<String>()))
                .collect();
            assert_eq!(shown, expected, "pieces of {size}");
        }
    }

    #[test]
    fn nothing_is_shown_before_the_value_starts() {
        let mut stream = CodeStream::default();
        assert_eq!(stream.push("{\"co"), "");
        assert_eq!(stream.push("de\": "), "");
        assert_eq!(stream.push("\"1+"), "1+");
        assert_eq!(stream.push("1\"}"), "1");
    }
}
