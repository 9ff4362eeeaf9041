//! The per-session limits a client may choose, within the maxima the server allows.

use crate::error::ApiError;
use sandcell_session::Limits;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

/// The limits of one session, as the API shows them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SessionLimits {
    /// Memory of the whole session, in MiB.
    pub memory_mib: u64,
    /// Processes and threads the session may run at once.
    pub processes: u64,
    /// Time limit of one execution, in seconds.
    pub timeout_secs: f64,
    /// Largest single file the code may write, in MiB.
    pub file_size_mib: u64,
    /// Total size the working directory may reach, in MiB.
    pub disk_quota_mib: u64,
}

/// Limits asked for when a session is created; each one left out takes the server's default.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsRequest {
    /// At least 64.
    #[schema(minimum = 64)]
    pub memory_mib: Option<u64>,
    /// At least 8.
    #[schema(minimum = 8)]
    pub processes: Option<u64>,
    /// More than 0.
    #[schema(exclusive_minimum = 0)]
    pub timeout_secs: Option<f64>,
    /// At least 1.
    #[schema(minimum = 1)]
    pub file_size_mib: Option<u64>,
    /// At least 1.
    #[schema(minimum = 1)]
    pub disk_quota_mib: Option<u64>,
}

impl SessionLimits {
    /// The limits of a session nobody asked anything of (`sandcell run`'s defaults).
    pub fn standard() -> Self {
        let limits = Limits::default();
        Self {
            memory_mib: limits.memory_mib,
            processes: limits.processes,
            timeout_secs: limits.timeout.as_secs_f64(),
            file_size_mib: limits.file_size_mib,
            disk_quota_mib: limits.workdir_quota_mib,
        }
    }

    /// Each limit no higher than in `max`.
    pub fn capped_by(&self, max: &SessionLimits) -> Self {
        Self {
            memory_mib: self.memory_mib.min(max.memory_mib),
            processes: self.processes.min(max.processes),
            timeout_secs: self.timeout_secs.min(max.timeout_secs),
            file_size_mib: self.file_size_mib.min(max.file_size_mib),
            disk_quota_mib: self.disk_quota_mib.min(max.disk_quota_mib),
        }
    }

    pub fn timeout(&self) -> Duration {
        // Checked when the limits were chosen; a configured maximum past what a Duration
        // holds means "no limit" rather than a panic.
        Duration::try_from_secs_f64(self.timeout_secs).unwrap_or(Duration::MAX)
    }

    /// The runtime's limits for a session with these.
    pub fn to_runtime(&self) -> Limits {
        Limits {
            memory_mib: self.memory_mib,
            processes: self.processes,
            timeout: self.timeout(),
            file_size_mib: self.file_size_mib,
            workdir_quota_mib: self.disk_quota_mib,
            ..Limits::default()
        }
    }
}

impl LimitsRequest {
    /// The limits of a new session: what was asked, else the server's defaults (the
    /// standard limits within `max`); an error names the first limit out of range.
    pub fn resolve(&self, max: &SessionLimits) -> Result<SessionLimits, ApiError> {
        let default = SessionLimits::standard().capped_by(max);
        let whole = |name: &str, asked: Option<u64>, default: u64, min: u64, max: u64| {
            let value = asked.unwrap_or(default);
            if (min..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ApiError::invalid(format!(
                    "limits.{name} must be between {min} and {max} on this server, not {value}."
                )))
            }
        };
        let timeout_secs = self.timeout_secs.unwrap_or(default.timeout_secs);
        if !(timeout_secs > 0.0 && timeout_secs <= max.timeout_secs) {
            return Err(ApiError::invalid(format!(
                "limits.timeout_secs must be more than 0 and at most {} on this server, not {timeout_secs}.",
                max.timeout_secs
            )));
        }
        Ok(SessionLimits {
            memory_mib: whole(
                "memory_mib",
                self.memory_mib,
                default.memory_mib,
                64,
                max.memory_mib,
            )?,
            processes: whole(
                "processes",
                self.processes,
                default.processes,
                8,
                max.processes,
            )?,
            timeout_secs,
            file_size_mib: whole(
                "file_size_mib",
                self.file_size_mib,
                default.file_size_mib,
                1,
                max.file_size_mib,
            )?,
            disk_quota_mib: whole(
                "disk_quota_mib",
                self.disk_quota_mib,
                default.disk_quota_mib,
                1,
                max.disk_quota_mib,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max() -> SessionLimits {
        SessionLimits {
            memory_mib: 1024,
            processes: 64,
            timeout_secs: 30.0,
            file_size_mib: 10,
            disk_quota_mib: 100,
        }
    }

    #[test]
    fn defaults_stay_within_the_maxima() {
        let limits = LimitsRequest::default().resolve(&max()).unwrap();
        assert_eq!(limits, max());
        let generous = SessionLimits {
            memory_mib: u64::MAX / 2,
            processes: 10_000,
            timeout_secs: 1e6,
            file_size_mib: 1 << 20,
            disk_quota_mib: 1 << 20,
        };
        assert_eq!(
            LimitsRequest::default().resolve(&generous).unwrap(),
            SessionLimits::standard()
        );
    }

    #[test]
    fn asked_limits_are_checked_against_the_maxima() {
        let asked = LimitsRequest {
            memory_mib: Some(512),
            timeout_secs: Some(2.5),
            ..LimitsRequest::default()
        };
        let limits = asked.resolve(&max()).unwrap();
        assert_eq!(limits.memory_mib, 512);
        assert_eq!(limits.timeout(), Duration::from_millis(2500));
        assert_eq!(limits.to_runtime().memory_mib, 512);

        let too_much = LimitsRequest {
            memory_mib: Some(4096),
            ..LimitsRequest::default()
        };
        let error = too_much.resolve(&max()).unwrap_err();
        assert!(error.message.contains("memory_mib"), "{error}");
        for timeout in [0.0, -1.0, 31.0] {
            let asked = LimitsRequest {
                timeout_secs: Some(timeout),
                ..LimitsRequest::default()
            };
            assert!(asked.resolve(&max()).is_err(), "{timeout}");
        }
    }
}
