//! Aligned columns for people: a header row in capitals, one row per
//! item, columns two spaces apart, no trailing blanks. A few lines here
//! rather than a table crate: nothing more is needed.

/// A table, or (without headers) a list of `name  value` lines.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Gap between columns.
const GAP: &str = "  ";

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| clean(h)).collect(),
            rows: Vec::new(),
        }
    }

    /// A table without a header row (name/value details).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Adds a row; each cell is [`clean`]ed, an empty cell shows `-`.
    pub fn row<S: AsRef<str>>(&mut self, cells: impl IntoIterator<Item = S>) {
        let row = cells
            .into_iter()
            .map(|c| match clean(c.as_ref()) {
                s if s.is_empty() => "-".to_string(),
                s => s,
            })
            .collect();
        self.rows.push(row);
    }

    /// Every line, each ending in `\n`; a table without rows is its
    /// header alone.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0usize; columns];
        let lines = std::iter::once(&self.headers)
            .filter(|h| !h.is_empty())
            .chain(&self.rows);
        for line in lines.clone() {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str(GAP);
                }
                text.push_str(cell);
                let pad = widths[i].saturating_sub(cell.chars().count());
                text.extend(std::iter::repeat_n(' ', pad));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `text` on one line with nothing a terminal acts on: control characters
/// (newlines, tabs, escape sequences from a tag or a state reason) become
/// spaces, so a cell can neither break the alignment nor drive the
/// terminal.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_their_widest_cell() {
        let mut t = Table::new(&["ID", "STATE", "NAME"]);
        t.row(["i-1", "running", "web"]);
        t.row(["i-22222", "stopped", ""]);
        t.row(["i-3", "", "données"]);
        assert_eq!(
            t.render(),
            "ID       STATE    NAME\n\
             i-1      running  web\n\
             i-22222  stopped  -\n\
             i-3      -        données\n"
        );
    }

    #[test]
    fn a_table_without_rows_is_its_header_and_plain_has_none() {
        assert_eq!(Table::new(&["A", "BB"]).render(), "A  BB\n");
        let mut t = Table::plain();
        t.row(["state", "running"]);
        t.row(["private ip", "10.0.0.4"]);
        assert_eq!(t.render(), "state       running\nprivate ip  10.0.0.4\n");
        assert_eq!(Table::plain().render(), "");
    }

    #[test]
    fn cells_cannot_break_lines_or_drive_the_terminal() {
        let mut t = Table::new(&["K", "V"]);
        t.row(["a\nb", "\u{1b}[31mred\ttab"]);
        assert_eq!(t.render(), "K    V\na b   [31mred tab\n");
        // Short rows are fine; the header is as wide as any.
        let mut t = Table::new(&["A", "B", "C"]);
        t.row(["1"]);
        assert_eq!(t.render(), "A  B  C\n1\n");
    }
}
