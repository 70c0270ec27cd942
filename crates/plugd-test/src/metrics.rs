//! Reading one sample out of the Prometheus text format.

/// The value of the first sample of `name` whose labels include every pair of `labels`.
///
/// ```
/// let text = "# TYPE x counter\nx{plugin=\"a\",hook=\"pre_request\"} 3\nx{plugin=\"b\"} 4\ny 1\n";
/// assert_eq!(plugd_test::metrics::sample(text, "x", &[("plugin", "b")]), Some(4.0));
/// assert_eq!(plugd_test::metrics::sample(text, "y", &[]), Some(1.0));
/// assert_eq!(plugd_test::metrics::sample(text, "x", &[("plugin", "c")]), None);
/// ```
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found = parse_labels(label_text);
            labels
                .iter()
                .all(|(k, v)| found.iter().any(|(fk, fv)| fk == k && fv == v))
                .then(|| value.trim().parse().ok())
                .flatten()
        })
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        value.push(match n {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').trim().to_string(), value));
        rest = &after[end..];
    }
    out
}
