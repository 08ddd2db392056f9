//! Plain-text tables for the terminal, one renderer for every listing
//! (`vmlab workloads`, `image list`, the bench summary): a header line,
//! columns as wide as their widest cell, two spaces between columns, text
//! left and numbers right, and no trailing spaces (so output diffs and
//! pastes cleanly).

use std::fmt;

/// Where a cell's text sits in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// Rows under a header; printed through `Display`.
#[derive(Debug, Clone)]
pub struct Table {
    columns: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

/// Between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table with these column headers.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            columns: columns
                .iter()
                .map(|(header, align)| ((*header).to_owned(), *align))
                .collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row, one cell per column.
    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let cells: Vec<String> = cells.into_iter().map(Into::into).collect();
        assert_eq!(
            cells.len(),
            self.columns.len(),
            "a row must have a cell per column"
        );
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (header, _))| {
                self.rows
                    .iter()
                    .map(|row| width(&row[i]))
                    .chain([width(header)])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

/// Characters, not bytes: `µs` and `→` take one column each.
fn width(text: &str) -> usize {
    text.chars().count()
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        let header = self.columns.iter().map(|(header, _)| header.as_str());
        self.line(f, &widths, header)?;
        for row in &self.rows {
            self.line(f, &widths, row.iter().map(String::as_str))?;
        }
        Ok(())
    }
}

impl Table {
    /// As a GitHub-flavoured Markdown table (numbers right-aligned; `|` in
    /// a cell escaped), for reports CI systems show.
    pub fn markdown(&self) -> String {
        let escape = |cell: &str| cell.replace('|', "\\|");
        let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
        let mut out = line(self.columns.iter().map(|(h, _)| escape(h)).collect());
        out += &line(
            self.columns
                .iter()
                .map(|(_, align)| match align {
                    Align::Left => "---".to_owned(),
                    Align::Right => "---:".to_owned(),
                })
                .collect(),
        );
        for row in &self.rows {
            out += &line(row.iter().map(|c| escape(c)).collect());
        }
        out
    }

    fn line<'a>(
        &self,
        f: &mut fmt::Formatter<'_>,
        widths: &[usize],
        cells: impl Iterator<Item = &'a str>,
    ) -> fmt::Result {
        let mut line = String::new();
        for (i, ((cell, (_, align)), w)) in cells.zip(&self.columns).zip(widths).enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            let pad = " ".repeat(w - width(cell));
            match align {
                Align::Left => line.extend([cell, &pad]),
                Align::Right => line.extend([&pad, cell]),
            }
        }
        writeln!(f, "{}", line.trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::Align::{Left, Right};
    use super::*;

    #[test]
    fn widths_come_from_content_and_numbers_align_right() {
        let mut t = Table::new(&[("NAME", Left), ("SIZE", Right), ("NOTE", Left)]);
        t.row(["a", "1", "first"]);
        t.row(["a-longer-name", "12345", ""]);
        t.row(["µs→", "7.5", "unicode counts by character"]);
        insta::assert_snapshot!(t.to_string(), @r"
        NAME            SIZE  NOTE
        a                  1  first
        a-longer-name  12345
        µs→              7.5  unicode counts by character
        ");
    }

    #[test]
    fn a_header_wider_than_its_cells_sets_the_width() {
        let mut t = Table::new(&[("VERSION", Left), ("N", Right), ("USED BY", Left)]);
        t.row(["1", "3", "-"]);
        insta::assert_snapshot!(t.to_string(), @r"
        VERSION  N  USED BY
        1        3  -
        ");
    }

    #[test]
    fn markdown_aligns_numbers_right_and_escapes_pipes() {
        let mut t = Table::new(&[("NAME", Left), ("N", Right)]);
        t.row(["a|b", "1"]);
        insta::assert_snapshot!(t.markdown(), @r"
        | NAME | N |
        | --- | ---: |
        | a\|b | 1 |
        ");
    }

    #[test]
    fn no_line_ends_in_a_space() {
        let mut t = Table::new(&[("A", Left), ("B", Left), ("C", Right)]);
        t.row(["x", "", ""]);
        t.row(["", "", ""]);
        let text = t.to_string();
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text:?}");
        assert_eq!(text, "A  B  C\nx\n\n");
    }

    #[test]
    #[should_panic(expected = "a row must have a cell per column")]
    fn a_short_row_is_a_bug() {
        Table::new(&[("A", Left), ("B", Left)]).row(["x"]);
    }
}
