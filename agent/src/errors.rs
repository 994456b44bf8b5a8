//! Error text for logs and the status API.

/// An error with its causes, `outer: cause: root cause`. Libraries (aya,
/// reqwest, hyper) keep the reason that matters in `source()`; a cause
/// whose text the message already contains is not repeated.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn causes_are_appended_once() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(super::chain(&e), "outer: disk on fire");
    }
}
