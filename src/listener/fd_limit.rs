//! The process's open-file limit. Many systems start processes with a soft limit of 1024 while
//! allowing far more; a server raises its own soft limit to the hard one at start.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit now in force
/// (`None`: unlimited, or unknown on this platform).
#[cfg(unix)]
pub fn raise() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(soft), Some(hard)) = (limit.current, limit.maximum)
        && soft < hard
    {
        match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
            Ok(()) => return Some(hard),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        }
    }
    limit.current
}

#[cfg(not(unix))]
pub fn raise() -> Option<u64> {
    None
}
