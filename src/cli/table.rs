//! Aligned text tables, the way `systemctl list-units` prints them: a header row, columns padded
//! to their widest cell, two spaces between columns.

/// Prints `rows` (the first is the header) aligned.
pub fn print(rows: &[Vec<String>]) {
    for line in render(rows) {
        println!("{line}");
    }
}

/// The lines of the table, without trailing blanks. Cells hold names and states that come from
/// files and from other hosts: each is shown printable (a terminal escape in a label is shown,
/// not obeyed).
pub fn render(rows: &[Vec<String>]) -> Vec<String> {
    let rows: Vec<Vec<String>> =
        rows.iter().map(|row| row.iter().map(|c| crate::printable::printable(c).into_owned()).collect()).collect();
    let rows = rows.as_slice();
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; columns];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
            cells.join("  ").trim_end().to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_align_on_the_widest_cell() {
        let rows = vec![vec!["A".to_string(), "B".into()], vec!["long".into(), "x".into()]];
        assert_eq!(super::render(&rows), ["A     B", "long  x"]);
    }

    #[test]
    fn cells_are_shown_printable() {
        let rows = vec![vec!["HOST".to_string(), "LABEL".into()], vec!["web1".into(), "\u{1b}]0;owned\u{7}x".into()]];
        assert_eq!(super::render(&rows), ["HOST  LABEL", "web1  \\u{1b}]0;owned\\u{7}x"]);
    }
}
