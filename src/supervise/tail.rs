//! The last lines of the app's stderr, kept while the bytes themselves pass straight through.
//!
//! Rules: bytes arrive in arbitrary chunks (a line may span chunks, a chunk may hold many
//! lines); only complete lines are kept, plus the unfinished one when asked; a line longer than
//! [`MAX_LINE`] bytes is cut there (an app printing megabytes on one line cannot exhaust memory);
//! every kept line has secrets masked when it is kept, so nothing read from the tail can leak a
//! password. Pure: no I/O, table-tested.

use std::collections::VecDeque;

use crate::redact;

/// How many lines the app's stderr tail keeps (DESIGN.md: its last 50 lines).
pub const APP_TAIL_LINES: usize = 50;
/// The longest line kept, in bytes.
pub const MAX_LINE: usize = 2_000;

/// A bounded tail of text lines.
#[derive(Debug, Clone)]
pub struct Tail {
    lines: VecDeque<String>,
    capacity: usize,
    /// The line being assembled (bytes up to [`MAX_LINE`]).
    partial: Vec<u8>,
    /// Whether the line being assembled was cut.
    cut: bool,
}

impl Tail {
    pub fn new(capacity: usize) -> Tail {
        Tail {
            lines: VecDeque::with_capacity(capacity.min(64)),
            capacity,
            partial: Vec::new(),
            cut: false,
        }
    }

    /// Takes in a chunk of output.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while let Some(at) = memchr::memchr(b'\n', bytes) {
            self.extend(&bytes[..at]);
            self.end_line();
            bytes = &bytes[at + 1..];
        }
        self.extend(bytes);
    }

    fn extend(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.partial.len());
        if bytes.len() > room {
            self.cut = true;
        }
        self.partial
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn end_line(&mut self) {
        let mut bytes = std::mem::take(&mut self.partial);
        if bytes.last() == Some(&b'\r') {
            bytes.pop();
        }
        let mut line = String::from_utf8_lossy(&bytes).into_owned();
        if self.cut {
            line.push('…');
            self.cut = false;
        }
        self.keep(line);
    }

    fn keep(&mut self, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back(redact::mask(&line).into_owned());
    }

    /// Ends the output: an unfinished last line is kept as a line.
    pub fn finish(&mut self) {
        if !self.partial.is_empty() || self.cut {
            self.end_line();
        }
    }

    /// The kept lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// The last `n` non-blank lines, oldest first.
    pub fn last(&self, n: usize) -> Vec<String> {
        let mut last: Vec<String> = self
            .lines
            .iter()
            .rev()
            .filter(|l| !l.trim().is_empty())
            .take(n)
            .cloned()
            .collect();
        last.reverse();
        last
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Removes and returns the kept lines, oldest first: used as a line splitter, a tail hands
    /// each complete (masked, bounded) line on as it arrives.
    pub fn drain(&mut self) -> impl Iterator<Item = String> + '_ {
        self.lines.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail_of(chunks: &[&[u8]], capacity: usize) -> Vec<String> {
        let mut tail = Tail::new(capacity);
        for chunk in chunks {
            tail.push(chunk);
        }
        tail.finish();
        tail.lines()
    }

    #[test]
    fn keeps_lines_across_chunks() {
        for (chunks, capacity, expected) in [
            (&[&b"a\nb\n"[..]][..], 5, &["a", "b"][..]),
            (&[&b"he"[..], b"llo\nwor", b"ld\n"], 5, &["hello", "world"]),
            (&[&b"one\r\ntwo"[..]], 5, &["one", "two"]),
            (&[&b"1\n2\n3\n4\n"[..]], 2, &["3", "4"]),
            (&[&b"\n\n"[..]], 5, &["", ""]),
            (&[&b"x\n"[..]], 0, &[]),
            (&[&b"caf\xc3"[..], b"\xa9\n"], 5, &["café"]),
        ] {
            assert_eq!(tail_of(chunks, capacity), expected, "{chunks:?}");
        }
    }

    #[test]
    fn cuts_long_lines() {
        let long = vec![b'x'; MAX_LINE * 3];
        let lines = tail_of(&[&long, b"\nnext\n"], 5);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE + '…'.len_utf8());
        assert!(lines[0].ends_with('…'));
        assert_eq!(lines[1], "next");
    }

    #[test]
    fn last_skips_blank_lines() {
        let mut tail = Tail::new(10);
        tail.push(b"first\nsecond\n\n  \n");
        assert_eq!(tail.last(1), ["second"]);
        assert_eq!(tail.last(5), ["first", "second"]);
        assert!(!tail.is_empty());
    }
}
