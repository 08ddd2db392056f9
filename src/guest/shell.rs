//! Building command lines for the guest's `sh`. Values are always quoted,
//! so a parameter or path never becomes two words or a second command.

/// `it's` → `'it'\''s'`: one word for any POSIX shell.
pub fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Every word quoted, joined by spaces.
pub fn join(words: &[String]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_survive_a_real_shell() {
        let words: Vec<String> = ["plain", "two words", "it's", "$(reboot)", "a\"b", "", "*"]
            .map(String::from)
            .to_vec();
        let script = format!("for w in {}; do printf '[%s]' \"$w\"; done", join(&words));
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[plain][two words][it's][$(reboot)][a\"b][][*]"
        );
    }
}
