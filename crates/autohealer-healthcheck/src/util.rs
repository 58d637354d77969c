//! Small pieces the probing checks share.

use std::fmt;
use std::sync::{Mutex, PoisonError};

/// A value that must never reach a log line: its `Debug` says only that it is there.
#[derive(Clone)]
pub(crate) struct Secret(pub(crate) String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

pub(crate) use autohealer_cloud::error_chain;

/// Cuts text that came from outside (a webhook's reason) so that it cannot bloat the
/// Events and annotations it ends up in.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// A check's latest failure to get evidence, for [`crate::HealthCheck::trouble`]. It is
/// logged only when it changes, since probes run on every node every interval and the
/// same failure would otherwise fill the log.
#[derive(Debug, Default)]
pub(crate) struct Trouble(Mutex<Option<String>>);

impl Trouble {
    pub(crate) fn set(&self, check: &str, message: String) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if t.as_deref() != Some(message.as_str()) {
            tracing::warn!(check, trouble = %message, "health check cannot get evidence; nodes are judged healthy by it meanwhile");
            *t = Some(message);
        }
    }

    pub(crate) fn clear(&self, check: &str) {
        let mut t = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = t.take() {
            tracing::info!(check, was = %old, "health check gets answers again");
        }
    }

    pub(crate) fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_keeps_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("ééé", 3), "é...");
    }
}
