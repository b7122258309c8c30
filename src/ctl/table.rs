//! Tables as etcdctl draws them (olekukonko/tablewriter with a header, right-aligned cells,
//! automatic wrapping of cells longer than 30 columns at spaces).

/// tablewriter's default wrap width.
const WRAP: usize = 30;

fn width(s: &str) -> usize {
    s.chars().count()
}

/// tablewriter's minimum-raggedness word wrap: lines of at most `lim` columns (or the longest
/// word, if longer).
fn wrap(s: &str, lim: usize) -> Vec<String> {
    let words: Vec<&str> = s.split(' ').collect();
    let lim = words.iter().map(|w| width(w)).max().unwrap_or(0).max(lim) as i64;
    let n = words.len();
    let mut len = vec![vec![0i64; n]; n];
    for i in 0..n {
        len[i][i] = width(words[i]) as i64;
        for j in i + 1..n {
            len[i][j] = len[i][j - 1] + 1 + width(words[j]) as i64;
        }
    }
    const PENALTY: i64 = 100_000;
    let mut cost = vec![i32::MAX as i64; n];
    let mut brk = vec![0usize; n];
    for i in (0..n).rev() {
        if len[i][n - 1] <= lim {
            cost[i] = 0;
            brk[i] = n;
        } else {
            for j in i + 1..n {
                let d = lim - len[i][j - 1];
                let mut c = d * d + cost[j];
                if len[i][j - 1] > lim {
                    c += PENALTY;
                }
                if c < cost[i] {
                    cost[i] = c;
                    brk[i] = j;
                }
            }
        }
    }
    let mut lines = Vec::new();
    let mut i = 0;
    while i < n {
        lines.push(words[i..brk[i]].join(" "));
        i = brk[i];
    }
    lines
}

/// A cell's lines after wrapping.
fn cell_lines(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in s.split('\n') {
        if width(line) > WRAP {
            out.extend(wrap(line, WRAP));
        } else {
            out.push(line.to_string());
        }
    }
    out
}

/// Renders `rows` under `header` (titles are upper-cased as tablewriter does).
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let titles: Vec<Vec<String>> = header
        .iter()
        .map(|h| cell_lines(&h.replace('_', " ").trim().to_uppercase()))
        .collect();
    let cells: Vec<Vec<Vec<String>>> = rows
        .iter()
        .map(|r| r.iter().map(|c| cell_lines(c)).collect())
        .collect();
    let mut widths: Vec<usize> = titles
        .iter()
        .map(|t| t.iter().map(|l| width(l)).max().unwrap_or(0))
        .collect();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            let w = c.iter().map(|l| width(l)).max().unwrap_or(0);
            if i < widths.len() {
                widths[i] = widths[i].max(w);
            }
        }
    }
    let mut line = String::from("+");
    for w in &widths {
        line.push_str(&"-".repeat(w + 2));
        line.push('+');
    }
    line.push('\n');

    let mut out = line.clone();
    push_row(&mut out, &titles, &widths, true);
    out.push_str(&line);
    for row in &cells {
        push_row(&mut out, row, &widths, false);
    }
    out.push_str(&line);
    out
}

fn push_row(out: &mut String, row: &[Vec<String>], widths: &[usize], center: bool) {
    let height = row.iter().map(|c| c.len()).max().unwrap_or(1);
    for k in 0..height {
        out.push('|');
        for (i, w) in widths.iter().enumerate() {
            let s = row.get(i).and_then(|c| c.get(k)).map_or("", |s| s.as_str());
            let gap = w.saturating_sub(width(s));
            out.push(' ');
            if center {
                let left = gap / 2;
                out.push_str(&" ".repeat(left));
                out.push_str(s);
                out.push_str(&" ".repeat(gap - left));
            } else {
                out.push_str(&" ".repeat(gap));
                out.push_str(s);
            }
            out.push_str(" |");
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_like_tablewriter() {
        let t = render(
            &["endpoint", "health", "took", "error"],
            &[vec![
                "127.0.0.1:23790".into(),
                "true".into(),
                "1.203756ms".into(),
                "".into(),
            ]],
        );
        let want = "\
+-----------------+--------+------------+-------+
|    ENDPOINT     | HEALTH |    TOOK    | ERROR |
+-----------------+--------+------------+-------+
| 127.0.0.1:23790 |   true | 1.203756ms |       |
+-----------------+--------+------------+-------+
";
        assert_eq!(t, want);
    }

    #[test]
    fn wraps_long_cells_at_spaces() {
        assert_eq!(
            cell_lines("rpc error: code = Unavailable desc = connection refused"),
            vec!["rpc error: code = Unavailable", "desc = connection refused"]
        );
    }
}
